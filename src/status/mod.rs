//! The relay's own pages: the landing page (`GET /`), the live status page
//! (`GET /status`) and the JSON it polls (`GET /status.json`).
//!
//! Every asset is embedded in the binary (`assets/`), nothing is fetched
//! from elsewhere, and no page echoes anything from the request (the
//! landing page finds its own `ws://` URL in the browser, from `location`).
//! The status page and its JSON are served wherever `/metrics` is
//! (`--metrics`), and off with it; the landing page is on the main
//! listener only. Nothing here names a channel, uid, alias, address or
//! payload: the snapshot is the `/metrics` counters (`snapshot`).
//!
//! Runs on the shard that accepted the request; never blocks beyond one
//! procfs read per snapshot.

pub mod snapshot;

use crate::config::{Config, MetricsEndpoint};
use crate::http::Response;
use crate::metrics::ShardCounters;
use std::borrow::Cow;

/// The landing page; `{{version}}` and `{{status}}` are filled in.
const LANDING_HTML: &str = include_str!("assets/landing.html");
/// The status page, served as it is: it reads everything from the JSON.
const STATUS_HTML: &str = include_str!("assets/status.html");

/// The pages' policy: their own inline script and style, requests to their
/// own origin only, never framed.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One of the relay's own pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`: what this server is and how to connect.
    Landing,
    /// `/status`: the live status page.
    Status,
    /// `/status.json`: the snapshot the status page polls.
    StatusJson,
}

impl Page {
    /// The page at `path`, if it is one.
    pub fn at(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Landing),
            "/status" => Some(Page::Status),
            "/status.json" => Some(Page::StatusJson),
            _ => None,
        }
    }

    /// Whether it follows `/metrics` (`--metrics main|off|ADDR`).
    pub fn beside_metrics(self) -> bool {
        matches!(self, Page::Status | Page::StatusJson)
    }
}

/// What the serving shard knows that a page may show.
pub struct Context<'a> {
    /// Every shard's counters (the same blocks `/metrics` reads).
    pub metrics: &'a [ShardCounters],
    /// The settings: the limits shown, and where `/metrics` is served.
    pub config: &'a Config,
    /// The serving shard's coarse clock: ms since it started.
    pub uptime_ms: u64,
}

/// The pages' headers besides type and length.
const PAGE_HEADERS: [(&str, &str); 4] = [
    ("Content-Security-Policy", PAGE_CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
];

/// Renders `page` as a `200` that closes; the caller decides keep-alive.
pub fn render(page: Page, context: &Context) -> Response {
    match page {
        Page::Landing => html(landing(context.config.metrics).into_bytes()),
        Page::Status => html(STATUS_HTML.as_bytes()),
        Page::StatusJson => {
            let process = snapshot::Process::now(context.uptime_ms);
            let body = snapshot::render(context.metrics, context.config, process);
            Response::json(200, body)
                .with_header("X-Content-Type-Options", "nosniff".into())
                .with_header("Cache-Control", "no-store".into())
        }
    }
}

fn html(body: impl Into<Cow<'static, [u8]>>) -> Response {
    let page = Response::text(200, body).with_content_type("text/html; charset=utf-8");
    PAGE_HEADERS.iter().fold(page, |page, (name, value)| {
        page.with_header(name, (*value).into())
    })
}

/// The landing page, saying where the status page is.
fn landing(metrics: MetricsEndpoint) -> String {
    let status = match metrics {
        MetricsEndpoint::Main => {
            "<a href=\"/status\">/status</a>: live figures per shard \
             (<a href=\"/status.json\">JSON</a>, <a href=\"/metrics\">Prometheus</a>)"
        }
        MetricsEndpoint::Listen(_) => {
            "the status page and metrics are served on the relay's separate \
             metrics address (<code>--metrics</code>), not here"
        }
        MetricsEndpoint::Off => {
            "the status page and metrics are turned off (<code>--metrics off</code>)"
        }
    };
    LANDING_HTML
        .replace("{{version}}", crate::conn::VERSION)
        .replace("{{status}}", status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(config: &Config) -> Context<'_> {
        Context {
            metrics: &[],
            config,
            uptime_ms: 0,
        }
    }

    #[test]
    fn pages_are_at_their_paths_only() {
        assert_eq!(Page::at("/"), Some(Page::Landing));
        assert_eq!(Page::at("/status"), Some(Page::Status));
        assert_eq!(Page::at("/status.json"), Some(Page::StatusJson));
        for other in ["", "/index.html", "/status/", "/status.js", "/STATUS"] {
            assert_eq!(Page::at(other), None, "{other}");
        }
        assert!(!Page::Landing.beside_metrics());
        assert!(Page::Status.beside_metrics() && Page::StatusJson.beside_metrics());
    }

    #[test]
    fn landing_page_has_its_version_and_no_placeholder_left() {
        for metrics in [
            MetricsEndpoint::Main,
            MetricsEndpoint::Off,
            MetricsEndpoint::Listen("127.0.0.1:9090".parse().unwrap()),
        ] {
            let config = Config {
                metrics,
                ..Config::default()
            };
            let page = render(Page::Landing, &context(&config));
            let text = String::from_utf8(page.body.into_owned()).unwrap();
            assert!(text.contains(crate::conn::VERSION));
            assert!(!text.contains("{{"), "{text}");
            // The metrics address is the operator's; the page never shows it.
            assert!(!text.contains("9090"));
            assert_eq!(
                text.contains("href=\"/status\""),
                metrics == MetricsEndpoint::Main
            );
        }
    }

    #[test]
    fn pages_fetch_nothing_from_elsewhere_and_stay_small() {
        for (name, html) in [("landing", LANDING_HTML), ("status", STATUS_HTML)] {
            for needle in [
                "src=\"http",
                "src='http",
                "@import",
                "url(http",
                "//cdn",
                "<link rel=\"stylesheet\"",
            ] {
                assert!(!html.contains(needle), "{name} page has {needle}");
            }
            assert!(
                html.len() < 100 * 1024,
                "{name} page is {} bytes",
                html.len()
            );
        }
    }
}
