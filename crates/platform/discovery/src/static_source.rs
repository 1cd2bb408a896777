//! Fixed instances from configuration.

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::{Discovery, DiscoveryError, Instance, Instances, publish};

/// Each configured URL is one instance whose id is the URL itself.
pub struct StaticDiscovery {
    /// Held so receivers never see the channel closed while the source lives.
    services: BTreeMap<String, watch::Sender<Instances>>,
}

impl StaticDiscovery {
    /// `urls`: service → base URLs (trailing `/` ignored).
    pub fn new(urls: BTreeMap<String, Vec<String>>) -> Self {
        let services = urls
            .into_iter()
            .map(|(service, urls)| {
                let (sender, _) = watch::channel(Instances::from([]));
                let instances = urls
                    .iter()
                    .map(|url| static_instance(&service, url))
                    .collect();
                publish(&sender, &service, instances);
                (service, sender)
            })
            .collect();
        Self { services }
    }
}

fn static_instance(service: &str, url: &str) -> Instance {
    let url = url.trim_end_matches('/').to_owned();
    Instance {
        id: url.clone(),
        service: service.to_owned(),
        url,
        version: String::new(),
        zone: None,
    }
}

#[async_trait::async_trait]
impl Discovery for StaticDiscovery {
    async fn watch(&self, service: &str) -> Result<watch::Receiver<Instances>, DiscoveryError> {
        self.services
            .get(service)
            .map(watch::Sender::subscribe)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))
    }
}
