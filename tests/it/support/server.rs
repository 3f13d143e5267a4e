//! The tests' one HTTP server: hyper's HTTP/1.1 on `127.0.0.1` (random
//! port), on a tokio runtime in a thread of its own, so that plain and
//! `#[tokio::test]` tests start it alike. The S3 server serves its `s3s`
//! service on it ([`Server::serve`]); the GitHub fake, the S3 fault proxy and
//! the download tests' small origins answer with a plain function
//! ([`Server::start`]), run on the runtime's blocking pool, that reads the
//! request body only if and when it chooses to.
//!
//! The fault hooks the fakes are made of:
//! - [`Reply::Drop`] closes the connection without any response;
//! - [`Body::cut`] sends the headers (with the whole `Content-Length`), part
//!   of the body, then closes: a truncated transfer (the connection's socket
//!   itself stops the bytes, so none that were meant to go are lost);
//! - [`Body::stall`] sends part of the body, then holds the connection open;
//! - [`Exchange::read_up_to`] reads only the start of a request body;
//! - a handler may answer before reading the body at all (a refusal): the
//!   rest is then drained for a while, so that the client reads the answer
//!   rather than a connection reset, unless it waits for `100 Continue`,
//!   which it is then never sent.
//!
//! Dropping a [`Server`] closes its port and every open connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response};

/// How long a request may take to send its headers, or one piece of its body.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the unread rest of a refused request's body is drained.
const LINGER: Duration = Duration::from_secs(2);

/// A running server. Dropping it stops it.
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What a handler answers.
pub enum Reply {
    Send(Response<Body>),
    /// Close the connection without any response.
    Drop,
}

/// How connections behave.
#[derive(Clone, Copy)]
pub enum Connections {
    /// One request per connection, every response saying `Connection: close`.
    Close,
    /// Keep-alive, as HTTP/1.1 has it.
    KeepAlive,
}

/// A bound port, for a server whose handler must know its own URL.
pub struct Port(std::net::TcpListener);

impl Port {
    pub fn bind() -> Port {
        Port(std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port"))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
}

impl Server {
    /// Answers each request with `handler`, run on the blocking pool.
    pub fn start(
        name: &str,
        connections: Connections,
        handler: impl Fn(&mut Exchange) -> Reply + Send + Sync + 'static,
    ) -> Server {
        Server::start_on(Port::bind(), name, connections, handler)
    }

    /// [`Server::start`] on a port bound beforehand.
    pub fn start_on(
        port: Port,
        name: &str,
        connections: Connections,
        handler: impl Fn(&mut Exchange) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let handler = Arc::new(handler);
        let make = move |wire: Arc<Mutex<Option<Cut>>>| {
            let handler = handler.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let (handler, wire) = (handler.clone(), wire.clone());
                answer(req, handler, wire)
            })
        };
        run_on(port, name, connections, make)
    }

    /// Serves any hyper service (the S3 server's).
    pub fn serve<S, B>(name: &str, connections: Connections, service: S) -> Server
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        run_on(Port::bind(), name, connections, move |_| service.clone())
    }
}

/// One request through a handler, on the blocking pool.
async fn answer(
    req: Request<Incoming>,
    handler: Arc<dyn Fn(&mut Exchange) -> Reply + Send + Sync>,
    wire: Arc<Mutex<Option<Cut>>>,
) -> io::Result<Response<Body>> {
    let (head, body) = req.into_parts();
    let waits_for_continue = head
        .headers
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut exchange = Exchange {
        head,
        body: Some(body),
        touched: false,
    };
    let answered = tokio::task::spawn_blocking(move || {
        let reply = handler(&mut exchange);
        (reply, exchange)
    })
    .await;
    let Ok((reply, exchange)) = answered else {
        return Err(io::Error::other("the handler panicked"));
    };
    let mut response = match reply {
        Reply::Send(response) => response,
        Reply::Drop => return Err(io::Error::other("dropped without a response")),
    };
    if let Some(body) = exchange.body
        && (exchange.touched || !waits_for_continue)
    {
        // Answered before the body was read: drain the rest for a while,
        // so that the client reads the answer rather than a reset.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LINGER, body.collect()).await;
        });
    }
    if let Some(after) = response.body().cut {
        *wire.lock().unwrap() = Some(Cut::after(after));
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_on<S, B>(
    port: Port,
    name: &str,
    connections: Connections,
    make: impl Fn(Arc<Mutex<Option<Cut>>>) -> S + Send + 'static,
) -> Server
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = port.0;
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let _ = socket.set_nodelay(true);
                        let cut = Arc::new(Mutex::new(None));
                        let service = make(cut.clone());
                        tokio::spawn(async move {
                            let io = hyper_util::rt::TokioIo::new(Wire { socket, cut });
                            let mut http = hyper::server::conn::http1::Builder::new();
                            match connections {
                                // A head must arrive in time.
                                Connections::Close => http
                                    .keep_alive(false)
                                    .timer(hyper_util::rt::TokioTimer::new())
                                    .header_read_timeout(READ_TIMEOUT),
                                // The head timer would also end idle
                                // connections, which a client's pool keeps.
                                Connections::KeepAlive => http.keep_alive(true),
                            };
                            let _ = http.serve_connection(io, service).await;
                        });
                    }
                }
            }
            // The listener is dropped here: the port stops listening.
        });
        // Every connection task goes with the runtime, and so its socket. A
        // handler still running (a body read waits on a connection just
        // closed) gets an error and ends.
        rt.shutdown_timeout(Duration::from_secs(5));
    };
    let thread = std::thread::Builder::new()
        .name(format!("{name}-{}", addr.port()))
        .spawn(serve)
        .unwrap();
    Server {
        url: format!("http://{addr}"),
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// A connection's socket. A response whose body is [`Body::cut`] arms it:
/// the response's head and the first bytes of its body reach the socket,
/// and the write after them fails, which ends the connection. (Ending the
/// body early instead would lose what hyper holds unflushed.)
struct Wire {
    socket: tokio::net::TcpStream,
    cut: Arc<Mutex<Option<Cut>>>,
}

/// Where a cut response stops: after the head's empty line, `after` bytes.
#[derive(Clone, Copy)]
struct Cut {
    after: u64,
    /// How much of `\r\n\r\n` the head has ended with so far.
    matched: u8,
    body_sent: u64,
}

impl Cut {
    fn after(after: u64) -> Cut {
        Cut {
            after,
            matched: 0,
            body_sent: 0,
        }
    }

    /// How many leading bytes of the head in `buf` it takes.
    fn head(&mut self, buf: &[u8]) -> usize {
        let mut i = 0;
        while self.matched < 4 && i < buf.len() {
            self.matched = match (self.matched, buf[i]) {
                (0 | 2, b'\r') | (1 | 3, b'\n') => self.matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            i += 1;
        }
        i
    }

    /// How many of `buf`'s bytes may still go out.
    fn allowed(&self, buf: &[u8]) -> usize {
        let mut s = *self;
        let head = s.head(buf);
        let left = usize::try_from(s.after - s.body_sent).unwrap_or(usize::MAX);
        head + (buf.len() - head).min(left)
    }

    fn sent(&mut self, buf: &[u8]) {
        let head = self.head(buf);
        self.body_sent += (buf.len() - head) as u64;
    }
}

impl tokio::io::AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let armed = *self.cut.lock().unwrap();
        let Some(cut) = armed else {
            return Pin::new(&mut self.socket).poll_write(cx, buf);
        };
        let allowed = cut.allowed(buf);
        if allowed == 0 && !buf.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let sent = std::task::ready!(Pin::new(&mut self.socket).poll_write(cx, &buf[..allowed]))?;
        if let Some(cut) = self.cut.lock().unwrap().as_mut() {
            cut.sent(&buf[..sent]);
        }
        Poll::Ready(Ok(sent))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// A request as a handler sees it: its head, and its body to read or not.
pub struct Exchange {
    pub head: http::request::Parts,
    body: Option<Incoming>,
    /// Whether any of the body was asked for.
    touched: bool,
}

impl Exchange {
    pub fn method(&self) -> &str {
        self.head.method.as_str()
    }

    /// The path with its query string, as sent.
    pub fn target(&self) -> &str {
        self.head.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole body; an error if it is over `cap` bytes (nothing more of it
    /// is read), or if the client went away or stalled first.
    pub fn read_body(&mut self, cap: u64) -> io::Result<Vec<u8>> {
        let out = self.read(u64::MAX, Some(cap))?;
        self.body = None;
        Ok(out)
    }

    /// The first `n` bytes of the body, or fewer if it ends first; the rest
    /// stays unread.
    pub fn read_up_to(&mut self, n: u64) -> io::Result<Vec<u8>> {
        self.read(n, None)
    }

    fn read(&mut self, n: u64, cap: Option<u64>) -> io::Result<Vec<u8>> {
        self.touched = true;
        let Some(body) = self.body.as_mut() else {
            return Ok(Vec::new());
        };
        let rt = tokio::runtime::Handle::current();
        let mut out = Vec::new();
        while (out.len() as u64) < n {
            let frame =
                rt.block_on(async { tokio::time::timeout(READ_TIMEOUT, body.frame()).await });
            let frame = match frame {
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(io::Error::other(e)),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if cap.is_some_and(|cap| out.len() as u64 + data.len() as u64 > cap) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
                }
                out.extend_from_slice(&data);
            }
        }
        out.truncate(usize::try_from(n).unwrap_or(usize::MAX).min(out.len()));
        Ok(out)
    }
}

/// A response body: all of it, or a fault.
pub struct Body {
    data: Option<Bytes>,
    /// Sends only this many bytes, and then ends the connection.
    cut: Option<u64>,
    stall: bool,
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            data: (!bytes.is_empty()).then_some(bytes),
            cut: None,
            stall: false,
        }
    }

    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// `bytes` as the `Content-Length`, but only their first `after` reach
    /// the client (for a request whose body was not read); then the
    /// connection is closed: a truncated transfer.
    pub fn cut(bytes: impl Into<Bytes>, after: u64) -> Body {
        Body {
            cut: Some(after),
            ..Body::full(bytes)
        }
    }

    /// The first `after` bytes of `bytes`, then nothing, for as long as the
    /// server runs (the response needs its own `Content-Length`).
    pub fn stall(bytes: impl Into<Bytes>, after: u64) -> Body {
        let bytes: Bytes = bytes.into();
        let n = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        Body {
            data: (n > 0).then(|| bytes.slice(..n)),
            cut: None,
            stall: true,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if self.stall {
            // Never woken: the connection ends with the server.
            return Poll::Pending;
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        match (self.stall, &self.data) {
            (true, _) => SizeHint::default(),
            (false, Some(data)) => SizeHint::with_exact(data.len() as u64),
            (false, None) => SizeHint::with_exact(0),
        }
    }
}

/// `200 OK` with `bytes`.
pub fn ok(bytes: impl Into<Bytes>) -> Reply {
    Reply::Send(Response::new(Body::full(bytes)))
}

/// An empty answer with `status`.
pub fn status(status: u16) -> Reply {
    Reply::Send(
        Response::builder()
            .status(status)
            .body(Body::empty())
            .unwrap(),
    )
}
