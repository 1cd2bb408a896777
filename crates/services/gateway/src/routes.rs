//! The route table: which upstream a path goes to.
//!
//! Built once from the settings and then only read, so the per-request work
//! is a scan of a handful of prefixes (longest first) and one atomic
//! increment for round robin. Everything a request needs from its route
//! (upstream URI parts, the `Host` value, the metrics label) is precomputed
//! here so that forwarding allocates as little as possible.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};

use crate::settings::RouteSettings;

/// One instance of a service.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The `Host` header sent to this upstream: its own authority.
    pub host: HeaderValue,
}

impl Upstream {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("upstream `{url}` is not a URL"))?;
        // The connector speaks plain HTTP; TLS to services is the mesh's job.
        ensure!(
            uri.scheme() == Some(&Scheme::HTTP),
            "upstream `{url}` must be an http:// URL"
        );
        let authority = uri
            .authority()
            .cloned()
            .with_context(|| format!("upstream `{url}` has no host"))?;
        // Paths are forwarded unchanged, so a base path would silently be lost.
        ensure!(
            matches!(uri.path(), "" | "/") && uri.query().is_none(),
            "upstream `{url}` must not have a path or query"
        );
        let host = HeaderValue::from_str(authority.as_str())
            .with_context(|| format!("upstream `{url}` has an invalid host"))?;
        Ok(Self {
            scheme: Scheme::HTTP,
            authority,
            host,
        })
    }
}

/// A prefix and the instances behind it.
#[derive(Debug)]
pub(crate) struct Route {
    pub prefix: Arc<str>,
    pub service: Arc<str>,
    pub timeout: Duration,
    upstreams: Box<[Upstream]>,
    next: AtomicUsize,
}

impl Route {
    fn new(settings: &RouteSettings, default_timeout: Duration) -> anyhow::Result<Self> {
        let prefix = normalize_prefix(&settings.prefix)?;
        let upstreams = settings
            .upstreams
            .iter()
            .map(|url| Upstream::parse(url))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("route `{prefix}`"))?;
        Ok(Self {
            prefix: prefix.into(),
            service: settings.service.as_str().into(),
            timeout: settings
                .timeout_ms
                .map_or(default_timeout, Duration::from_millis),
            upstreams: upstreams.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// The next instance, round robin; `None` when the service has none.
    pub fn next_upstream(&self) -> Option<&Upstream> {
        if self.upstreams.is_empty() {
            return None;
        }
        // Relaxed is enough: fairness, not ordering, is all we need, and the
        // counter wrapping around only skews one step.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.upstreams.get(n % self.upstreams.len())
    }

    pub fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    fn matches(&self, path: &str) -> bool {
        segment_prefix_matches(&self.prefix, path)
    }
}

/// All routes, longest prefix first.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Box<[Route]>,
}

impl RouteTable {
    pub fn new(settings: &[RouteSettings], default_timeout: Duration) -> anyhow::Result<Self> {
        let mut routes = settings
            .iter()
            .map(|r| Route::new(r, default_timeout))
            .collect::<anyhow::Result<Vec<_>>>()?;
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        if let Some(pair) = routes.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            bail!("route prefix `{}` is configured twice", pair[0].prefix);
        }
        Ok(Self {
            routes: routes.into_boxed_slice(),
        })
    }

    /// The route for `path` (without the query string).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// `/api/reviews/` and `/api/reviews` are the same rule; `/` is the catch-all.
fn normalize_prefix(prefix: &str) -> anyhow::Result<String> {
    ensure!(
        prefix.starts_with('/'),
        "route prefix `{prefix}` must start with `/`"
    );
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// `/api/reviews` matches `/api/reviews` and `/api/reviews/…` but not
/// `/api/reviewsx`.
fn segment_prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A `.` or `..` segment, also percent-encoded. Upstreams route on the raw
/// path, so `/api/reviews/../../auth/x` must not reach them: the prefix we
/// matched would not be the path they resolve.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(is_dot_segment)
}

/// Counts the dots of a segment made only of `.` and `%2e`, without
/// allocating (this runs on every request).
fn is_dot_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut dots = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i..] {
            [b'.', ..] => i += 1,
            [b'%', b'2', b'e' | b'E', ..] => i += 3,
            _ => return false,
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> RouteTable {
        let settings: Vec<_> = prefixes
            .iter()
            .map(|p| RouteSettings::new(p, "svc"))
            .collect();
        RouteTable::new(&settings, Duration::from_secs(1)).unwrap()
    }

    fn found<'a>(table: &'a RouteTable, path: &str) -> Option<&'a str> {
        table.find(path).map(|r| &*r.prefix)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let table = table(&["/api/reviews", "/auth/"]);
        assert_eq!(found(&table, "/api/reviews"), Some("/api/reviews"));
        assert_eq!(found(&table, "/api/reviews/1"), Some("/api/reviews"));
        assert_eq!(found(&table, "/api/reviewsx"), None);
        assert_eq!(found(&table, "/auth"), Some("/auth"));
        assert_eq!(found(&table, "/auth/token"), Some("/auth"));
        assert_eq!(found(&table, "/"), None);
    }

    #[test]
    fn the_longest_prefix_wins_and_slash_catches_all() {
        let table = table(&["/", "/api", "/api/reviews"]);
        assert_eq!(found(&table, "/api/reviews/2"), Some("/api/reviews"));
        assert_eq!(found(&table, "/api/books"), Some("/api"));
        assert_eq!(found(&table, "/index.html"), Some("/"));
    }

    #[test]
    fn bad_tables_are_refused() {
        let dup = [
            RouteSettings::new("/a", "x"),
            RouteSettings::new("/a/", "y"),
        ];
        assert!(RouteTable::new(&dup, Duration::from_secs(1)).is_err());
        assert!(RouteTable::new(&[RouteSettings::new("a", "x")], Duration::ZERO).is_err());
        for url in [
            "https://x:1",
            "http://x:1/base",
            "x:1",
            "http://x:1/?q",
            "not a url",
        ] {
            let mut route = RouteSettings::new("/a", "x");
            route.upstreams = vec![url.into()];
            assert!(
                RouteTable::new(&[route], Duration::ZERO).is_err(),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn upstreams_rotate() {
        let mut route = RouteSettings::new("/a", "x");
        route.upstreams = vec!["http://one:1".into(), "http://two:2/".into()];
        let table = RouteTable::new(&[route], Duration::ZERO).unwrap();
        let route = table.find("/a").unwrap();
        let hosts: Vec<_> = (0..4)
            .map(|_| route.next_upstream().unwrap().host.clone())
            .collect();
        assert_eq!(hosts, ["one:1", "two:2", "one:1", "two:2"]);
    }

    #[test]
    fn dot_segments_are_detected() {
        for bad in ["/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/.%2e", "/.."] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/a/b", "/a/.well-known", "/a/..b", "/a/file.txt", "/"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }
}
