//! The report as one self-contained HTML page: no script, no font, no
//! request anywhere; real tables with headers; every state in words (colour
//! only repeats it). Links are relative to the page's place in the store
//! (`reports/`), so it works served from S3 or a CDN and opened from a
//! local store on disk.

use std::fmt::Write as _;

use super::{CellReport, Report, State, duration, mib, state_line};

/// Text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A store key as a link from the page: relative, each segment escaped.
fn href(key: &str) -> String {
    format!("../{}", esc(key))
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24}
table{border-collapse:collapse;margin:1rem 0}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #c9d1d9;padding:.3rem .5rem;vertical-align:top;text-align:left}
thead th{background:#f0f3f6}
td.built{background:#e6ffec}td.failed{background:#ffebe9}
td.never-built,td.unknown{background:#f6f8fa;color:#57606a}
td.stale{background:#fff8c5}
.note{display:block;font-size:12px;color:#57606a}
.stale .note{color:#7d4e00}
code{font-size:12px;word-break:break-all}
svg{vertical-align:middle}
";

pub fn render(report: &Report) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>Slurm Factory build report</title>\n");
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
    h.push_str("<h1>Slurm Factory build report</h1>\n");
    let _ = writeln!(
        h,
        "<p>Generated {} from {}. {} cells; {} recorded runs in the history.</p>",
        esc(&report.generated),
        esc(&report.store),
        report.cells.len(),
        report.history_runs
    );
    if let Some(why) = &report.unreachable {
        let _ = writeln!(
            h,
            "<p role=\"alert\"><strong>The store could not be read:</strong> {}. \
             Every cell's state is unknown.</p>",
            esc(why)
        );
    }
    grid(&mut h, report);
    packages(&mut h, report);
    h.push_str("</body>\n</html>\n");
    h
}

fn cell<'a>(
    report: &'a Report,
    slurm: Option<&str>,
    toolchain: &str,
    variant: &str,
) -> Option<&'a CellReport> {
    report
        .cells
        .iter()
        .find(|c| c.slurm.as_deref() == slurm && c.toolchain == toolchain && c.variant == variant)
}

fn state_td(h: &mut String, c: Option<&CellReport>) {
    let Some(c) = c else {
        h.push_str("<td class=\"unknown\">not in the matrix</td>");
        return;
    };
    let class = match c.state {
        _ if c.stale => "stale",
        State::Built => "built",
        State::Failed => "failed",
        State::NeverBuilt => "never-built",
        State::Unknown => "unknown",
    };
    let _ = write!(h, "<td class=\"{class}\" id=\"cell-{}\">", esc(&c.id));
    h.push_str(c.state.text());
    if let Some(v) = &c.verify
        && !v.passed
    {
        let _ = write!(h, ": verify failed ({})", esc(&v.failed.join(", ")));
    }
    if c.state == State::NeverBuilt {
        h.push_str(" <span class=\"note\">the store has no record of it</span>");
    }
    if c.stale {
        let _ = write!(h, " <span class=\"note\">stale: {}</span>", esc(&c.reason));
    }
    h.push_str("</td>");
}

/// Slurm version × toolchain, with the toolchain's deps and both variants.
fn grid(h: &mut String, report: &Report) {
    h.push_str(
        "<table id=\"matrix\">\n<caption>The matrix: every cell's last recorded build</caption>\n",
    );
    h.push_str("<thead><tr><th scope=\"col\">Slurm</th><th scope=\"col\">toolchain</th>");
    h.push_str("<th scope=\"col\">deps, CPU</th><th scope=\"col\">deps, GPU</th>");
    h.push_str("<th scope=\"col\">Slurm, CPU</th><th scope=\"col\">Slurm, GPU</th></tr></thead>\n<tbody>\n");
    for version in &report.slurm_versions {
        for toolchain in &report.toolchains {
            let _ = write!(
                h,
                "<tr><th scope=\"row\">{}</th><th scope=\"row\">{}</th>",
                esc(version),
                esc(toolchain)
            );
            for variant in ["cpu", "gpu"] {
                state_td(h, cell(report, None, toolchain, variant));
            }
            for variant in ["cpu", "gpu"] {
                state_td(h, cell(report, Some(version), toolchain, variant));
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</tbody>\n</table>\n");
}

/// Every Slurm cell's package: size, build time, verify, checksum, files,
/// and its size over the recorded runs.
fn packages(h: &mut String, report: &Report) {
    h.push_str("<table id=\"packages\">\n<caption>Packages</caption>\n<thead><tr>");
    for col in [
        "cell",
        "state",
        "size",
        "size over time",
        "build time",
        "verify",
        "SHA-256",
        "release",
        "files",
    ] {
        let _ = write!(h, "<th scope=\"col\">{col}</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for c in report.cells.iter().filter(|c| c.slurm.is_some()) {
        let _ = write!(
            h,
            "<tr id=\"package-{}\"><th scope=\"row\">{}</th><td>{}</td>",
            esc(&c.id),
            esc(&c.id),
            esc(&state_line(c))
        );
        match &c.package {
            Some(p) => {
                let parts = if p.parts > 0 {
                    format!(" in {} parts", p.parts)
                } else {
                    String::new()
                };
                let _ = write!(h, "<td>{}{parts}</td>", mib(p.size));
            }
            None => h.push_str("<td>no published package</td>"),
        }
        let _ = write!(h, "<td>{}</td>", sparkline(&c.size_history));
        let _ = write!(
            h,
            "<td>{}</td>",
            c.seconds.map_or("not recorded".into(), duration)
        );
        let verify = match &c.verify {
            None => "not recorded".to_string(),
            Some(v) if v.passed => "passed".into(),
            Some(v) => format!("failed: {}", v.failed.join(", ")),
        };
        let _ = write!(h, "<td>{}</td>", esc(&verify));
        match c.package.as_ref().and_then(|p| p.sha256.as_ref()) {
            Some(sha) => {
                let _ = write!(h, "<td><code>{}</code></td>", esc(sha));
            }
            None => h.push_str("<td></td>"),
        }
        let _ = write!(
            h,
            "<td>{}</td>",
            esc(c.package.as_ref().map_or("", |p| p.release.as_str()))
        );
        h.push_str("<td>");
        if let Some(p) = &c.package {
            let links: Vec<String> = p
                .links
                .iter()
                .map(|(label, key)| format!("<a href=\"{}\">{}</a>", href(key), esc(label)))
                .collect();
            h.push_str(&links.join(" · "));
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// A small inline chart of a size series, with its numbers in words (a jump
/// of more than a fifth since the run before is named).
fn sparkline(series: &[(String, u64)]) -> String {
    if series.is_empty() {
        return "no history".into();
    }
    let (w, ht) = (120.0_f64, 24.0_f64);
    let max = series.iter().map(|(_, s)| *s).max().unwrap_or(1).max(1) as f64;
    let min = series.iter().map(|(_, s)| *s).min().unwrap_or(0) as f64;
    let span = (max - min).max(1.0);
    let step = if series.len() > 1 {
        w / (series.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            let y = ht - 2.0 - (*s as f64 - min) / span * (ht - 4.0);
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    let last = series[series.len() - 1].1;
    let mut words = format!(
        "{} run{}, {} to {}, now {}",
        series.len(),
        if series.len() == 1 { "" } else { "s" },
        mib(min as u64),
        mib(max as u64),
        mib(last)
    );
    if let [.., (_, before), _] = series
        && *before > 0
    {
        let change = (last as f64 - *before as f64) / *before as f64;
        if change.abs() > 0.2 {
            words.push_str(&format!("; {:+.0}% since the run before", change * 100.0));
        }
    }
    format!(
        "<svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{words}\"><title>{words}</title>\
         <polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/></svg> \
         <span>{words}</span>",
        points.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_store_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(href("releases/a b/<x>"), "../releases/a b/&lt;x&gt;");
    }

    #[test]
    fn a_size_jump_is_named_in_words() {
        let series: Vec<(String, u64)> = [100u64, 101, 102, 150]
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("t{i}"), s << 20))
            .collect();
        let svg = sparkline(&series);
        assert!(svg.contains("+47% since the run before"), "{svg}");
        assert!(!sparkline(&series[..3]).contains("since the run before"));
        assert_eq!(sparkline(&[]), "no history");
    }
}
