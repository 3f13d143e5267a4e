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
//!   of the body, then closes: a truncated transfer;
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
use std::sync::Arc;
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

impl Server {
    /// Answers each request with `handler`, run on the blocking pool.
    pub fn start(
        name: &str,
        connections: Connections,
        handler: impl Fn(&mut Exchange) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let handler = Arc::new(handler);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move {
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
                match reply {
                    Reply::Send(response) => {
                        if let Some(body) = exchange.body
                            && (exchange.touched || !waits_for_continue)
                        {
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(LINGER, body.collect()).await;
                            });
                        }
                        Ok(response)
                    }
                    Reply::Drop => Err(io::Error::other("dropped without a response")),
                }
            }
        });
        Server::serve(name, connections, service)
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || run(listener, connections, service, stopped))
            .unwrap();
        Server {
            url: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
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

fn run<S, B>(
    listener: std::net::TcpListener,
    connections: Connections,
    service: S,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
                    let service = service.clone();
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(socket);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(READ_TIMEOUT)
                            .keep_alive(matches!(connections, Connections::KeepAlive))
                            .serve_connection(io, service)
                            .await;
                    });
                }
            }
        }
        // The listener is dropped here: the port stops listening.
    });
    // Every connection task goes with the runtime, and so its socket. A
    // handler still running (a body read waits on a connection just closed)
    // gets an error and ends.
    rt.shutdown_timeout(Duration::from_secs(5));
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
    end: End,
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    Complete,
    Cut,
    Stall,
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            data: (!bytes.is_empty()).then_some(bytes),
            end: End::Complete,
        }
    }

    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// The first `after` bytes of `bytes`, then the connection is closed.
    pub fn cut(bytes: impl Into<Bytes>, after: u64) -> Body {
        Body::partial(bytes.into(), after, End::Cut)
    }

    /// The first `after` bytes of `bytes`, then nothing, for as long as the
    /// server runs.
    pub fn stall(bytes: impl Into<Bytes>, after: u64) -> Body {
        Body::partial(bytes.into(), after, End::Stall)
    }

    fn partial(bytes: Bytes, after: u64, end: End) -> Body {
        let n = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        Body {
            data: (n > 0).then(|| bytes.slice(..n)),
            end,
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
        match self.end {
            End::Complete => Poll::Ready(None),
            End::Cut => Poll::Ready(Some(Err(io::Error::other("cut short")))),
            // Never woken: the connection ends with the server.
            End::Stall => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.end == End::Complete
    }

    fn size_hint(&self) -> SizeHint {
        match (self.end, &self.data) {
            (End::Complete, Some(data)) => SizeHint::with_exact(data.len() as u64),
            (End::Complete, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
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
