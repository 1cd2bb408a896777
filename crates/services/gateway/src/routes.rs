//! The route table: which service a path goes to, and the shared state of
//! each service (its balancer over the live instances and its bulkhead).
//!
//! Routes are built once from the settings and then only read, so the
//! per-request work is a scan of a handful of prefixes (longest first). The
//! instances behind a service change at runtime through [`Upstreams`]; all
//! routes of one service share one balancer, so their requests see the same
//! breakers and load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http::Method;
use zocalo_http::balance::Balancer;

use crate::bulkhead::Bulkhead;
use crate::cache::CacheRoute;
use crate::settings::Settings;

/// A prefix and the service behind it.
#[derive(Debug)]
pub(crate) struct Route {
    pub prefix: Arc<str>,
    pub service: Arc<str>,
    /// The whole budget of a request, retries included.
    pub timeout: Duration,
    /// The budget of one try (at most what is left of `timeout`).
    pub try_timeout: Duration,
    /// The largest request body this route accepts.
    pub max_body_bytes: usize,
    pub balancer: Balancer,
    pub bulkhead: Arc<Bulkhead>,
    pub cache: CacheRoute,
    /// Empty: every method.
    pub methods: Box<[Method]>,
}

impl Route {
    pub fn has_upstreams(&self) -> bool {
        !self.balancer.is_empty()
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && segment_prefix_matches(&self.prefix, path)
    }

    /// Whether two routes claim the same requests: one prefix, and both
    /// for every method or both for a shared one. A route for some methods
    /// beside one for all is fine: it comes first.
    fn overlaps(&self, other: &Route) -> bool {
        self.prefix == other.prefix
            && match (self.methods.is_empty(), other.methods.is_empty()) {
                (true, true) => true,
                (false, false) => self.methods.iter().any(|m| other.methods.contains(m)),
                _ => false,
            }
    }
}

/// `["get", "HEAD"]` as methods; an unknown name is a settings error.
fn parse_methods(prefix: &str, names: &[String]) -> anyhow::Result<Box<[Method]>> {
    names
        .iter()
        .map(|name| {
            Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
                .with_context(|| format!("route `{prefix}`: `{name}` is not an HTTP method"))
        })
        .collect()
}

/// The state shared by every route of one service.
#[derive(Debug, Clone)]
struct Service {
    balancer: Balancer,
    bulkhead: Arc<Bulkhead>,
}

/// The instances of every routed service, changeable at runtime (what
/// discovery calls on every change). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Upstreams {
    services: Arc<HashMap<Arc<str>, Balancer>>,
}

impl Upstreams {
    /// Replace the instances of `service` with `urls` (`http://host:port`).
    /// Instances that stay keep their breaker state and load; an invalid URL
    /// leaves the set unchanged.
    pub fn set(&self, service: &str, urls: &[String]) -> anyhow::Result<()> {
        let balancer = self
            .services
            .get(service)
            .with_context(|| format!("no route goes to service `{service}`"))?;
        balancer.set_endpoints(urls)?;
        tracing::info!(
            service,
            instances = urls.len(),
            "upstream instances updated"
        );
        Ok(())
    }

    /// Give the instances of `service` the weights in `weights` (base URL
    /// to weight; unlisted instances weigh 1, 0 drains one).
    pub fn set_weights(
        &self,
        service: &str,
        weights: &BTreeMap<String, u32>,
    ) -> anyhow::Result<()> {
        let balancer = self
            .services
            .get(service)
            .with_context(|| format!("no route goes to service `{service}`"))?;
        balancer.set_weights(weights.iter().map(|(url, weight)| (url.as_str(), *weight)));
        Ok(())
    }

    /// The current instances of `service`, as base URLs.
    pub fn get(&self, service: &str) -> Option<Vec<String>> {
        let balancer = self.services.get(service)?;
        Some(
            balancer
                .endpoints()
                .iter()
                .map(|e| e.url().to_owned())
                .collect(),
        )
    }

    /// The names of the routed services.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(|name| &**name)
    }
}

/// All routes, longest prefix first.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Box<[Route]>,
    upstreams: Upstreams,
}

/// One balancer and one bulkhead per service, over the union of the
/// upstreams its routes list (normally the same list, set per service).
fn build_services(settings: &Settings) -> anyhow::Result<HashMap<&str, Service>> {
    let mut urls: HashMap<&str, Vec<String>> = HashMap::new();
    for route in &settings.routes {
        let list = urls.entry(route.service.as_str()).or_default();
        for url in &route.upstreams {
            if !list.contains(url) {
                list.push(url.clone());
            }
        }
    }
    urls.into_iter()
        .map(|(name, urls)| {
            let balancer =
                Balancer::new(name, settings.balancing, settings.breaker, &settings.retry);
            balancer
                .set_endpoints(&urls)
                .with_context(|| format!("service `{name}`"))?;
            let service = Service {
                balancer,
                bulkhead: Arc::new(Bulkhead::new(name, settings.max_concurrent)),
            };
            Ok((name, service))
        })
        .collect()
}

impl RouteTable {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let services = build_services(settings)?;
        let default_timeout = Duration::from_millis(settings.default_timeout_ms);
        let mut routes = settings
            .routes
            .iter()
            .map(|r| {
                let prefix = normalize_prefix(&r.prefix)?;
                let service = &services[r.service.as_str()];
                let timeout = r.timeout_ms.map_or(default_timeout, Duration::from_millis);
                let try_timeout =
                    Duration::from_millis(r.try_timeout_ms.unwrap_or(settings.try_timeout_ms))
                        .min(timeout);
                let service_name: Arc<str> = r.service.as_str().into();
                Ok(Route {
                    methods: parse_methods(&prefix, &r.methods)?,
                    prefix: prefix.into(),
                    cache: CacheRoute::new(&service_name, r.cache),
                    service: service_name,
                    timeout,
                    try_timeout,
                    max_body_bytes: r.max_body_bytes.unwrap_or(settings.max_body_bytes),
                    balancer: service.balancer.clone(),
                    bulkhead: service.bulkhead.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Longest prefix first; of one prefix, routes for some methods
        // before the one for all.
        routes.sort_by_key(|route| {
            (
                std::cmp::Reverse(route.prefix.len()),
                route.methods.is_empty(),
            )
        });
        for (i, route) in routes.iter().enumerate() {
            if routes[i + 1..].iter().any(|other| route.overlaps(other)) {
                bail!(
                    "route prefix `{}` is configured twice for the same methods",
                    route.prefix
                );
            }
        }
        let upstreams = Upstreams {
            services: Arc::new(
                services
                    .into_iter()
                    .map(|(name, service)| (Arc::from(name), service.balancer))
                    .collect(),
            ),
        };
        Ok(Self {
            routes: routes.into_boxed_slice(),
            upstreams,
        })
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The route for a `method` on `path` (without the query string).
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
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
    use crate::settings::RouteSettings;

    fn settings_with(routes: Vec<RouteSettings>) -> Settings {
        Settings {
            routes,
            ..Settings::default()
        }
    }

    fn table(prefixes: &[&str]) -> RouteTable {
        let routes = prefixes
            .iter()
            .map(|p| RouteSettings::new(p, "svc"))
            .collect();
        RouteTable::new(&settings_with(routes)).unwrap()
    }

    fn found<'a>(table: &'a RouteTable, path: &str) -> Option<&'a str> {
        table.find(&Method::GET, path).map(|r| &*r.prefix)
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
    fn one_prefix_can_be_split_by_method() {
        let routes = vec![
            RouteSettings::new("/api/cinema", "command"),
            RouteSettings::new("/api/cinema", "query").with_methods(&["get", "HEAD"]),
        ];
        let table = RouteTable::new(&settings_with(routes)).unwrap();
        let service = |method: Method| {
            table
                .find(&method, "/api/cinema/showtimes/1")
                .map(|r| r.service.to_string())
        };
        assert_eq!(service(Method::GET).as_deref(), Some("query"));
        assert_eq!(service(Method::HEAD).as_deref(), Some("query"));
        for method in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(service(method).as_deref(), Some("command"));
        }
        let overlapping = vec![
            RouteSettings::new("/a", "x").with_methods(&["GET", "POST"]),
            RouteSettings::new("/a", "y").with_methods(&["POST"]),
        ];
        assert!(RouteTable::new(&settings_with(overlapping)).is_err());
        let unknown = vec![RouteSettings::new("/a", "x").with_methods(&["G ET"])];
        assert!(RouteTable::new(&settings_with(unknown)).is_err());
    }

    #[test]
    fn the_default_table_gives_apis_their_services_and_the_rest_to_web() {
        let table = RouteTable::new(&Settings::default()).unwrap();
        let service = |path: &str| {
            table
                .find(&Method::GET, path)
                .map(|r| r.service.to_string())
        };
        assert_eq!(service("/api/books/1").as_deref(), Some("catalog"));
        assert_eq!(service("/auth/token").as_deref(), Some("auth"));
        assert_eq!(service("/api/content").as_deref(), Some("reviews"));
        for page in ["/", "/books", "/reviews/1", "/assets/app.css", "/apix"] {
            assert_eq!(service(page).as_deref(), Some("web"), "{page}");
        }
    }

    #[test]
    fn bad_tables_are_refused() {
        let dup = vec![
            RouteSettings::new("/a", "x"),
            RouteSettings::new("/a/", "y"),
        ];
        assert!(RouteTable::new(&settings_with(dup)).is_err());
        assert!(RouteTable::new(&settings_with(vec![RouteSettings::new("a", "x")])).is_err());
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
                RouteTable::new(&settings_with(vec![route])).is_err(),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn routes_of_one_service_share_its_instances() {
        let mut one = RouteSettings::new("/a", "x");
        one.upstreams = vec!["http://one:1".into()];
        let mut two = RouteSettings::new("/b", "x");
        two.upstreams = vec!["http://two:2/".into()];
        two.timeout_ms = Some(100);
        let table = RouteTable::new(&settings_with(vec![
            one,
            two,
            RouteSettings::new("/c", "y"),
        ]))
        .unwrap();
        let upstreams = table.upstreams();
        assert_eq!(
            upstreams.get("x").unwrap(),
            ["http://one:1", "http://two:2"],
            "the union of the routes' lists"
        );
        assert_eq!(
            table.find(&Method::GET, "/b").unwrap().try_timeout,
            Duration::from_millis(100),
            "a try never outlasts its request"
        );

        upstreams.set("x", &["http://three:3".into()]).unwrap();
        for prefix in ["/a", "/b"] {
            let route = table.find(&Method::GET, prefix).unwrap();
            let pick = route.balancer.pick(&[]).unwrap();
            assert_eq!(pick.endpoint().url(), "http://three:3");
        }
        assert!(!table.find(&Method::GET, "/c").unwrap().has_upstreams());
        upstreams.set("y", &["http://four:4".into()]).unwrap();
        assert!(table.find(&Method::GET, "/c").unwrap().has_upstreams());
        assert!(upstreams.set("nobody", &[]).is_err());
        assert!(upstreams.set("x", &["ftp://x".into()]).is_err());
        assert_eq!(upstreams.get("x").unwrap(), ["http://three:3"]);
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
