//! Instances from DNS: every address a name resolves to is one instance,
//! which is how a Kubernetes headless service lists its pods.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::loops::Loops;
use crate::{Discovery, DiscoveryError, Instance, Instances, publish};

pub struct DnsDiscovery {
    /// service → `host:port`.
    names: BTreeMap<String, String>,
    interval: Duration,
    /// One resolver loop per watched service, shared by its watchers.
    loops: Loops,
}

impl DnsDiscovery {
    /// `names`: service → `host:port`, re-resolved every `interval`.
    pub fn new(
        names: BTreeMap<String, String>,
        interval: Duration,
    ) -> Result<Self, DiscoveryError> {
        if interval.is_zero() {
            return Err(DiscoveryError::Invalid(
                "DNS interval must be above zero".into(),
            ));
        }
        Ok(Self {
            names,
            interval,
            loops: Loops::default(),
        })
    }
}

#[async_trait::async_trait]
impl Discovery for DnsDiscovery {
    async fn watch(&self, service: &str) -> Result<watch::Receiver<Instances>, DiscoveryError> {
        let name = self
            .names
            .get(service)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))?;
        if let Some(receiver) = self.loops.subscribe(service) {
            return Ok(receiver);
        }
        // Resolve once before answering, so the first value is already real.
        let sender = watch::Sender::new(Instances::from([]));
        if let Some(instances) = resolve(service, name).await {
            publish(&sender, service, instances);
        }
        let (service, name, interval) = (service.to_owned(), name.clone(), self.interval);
        Ok(self.loops.start(&service.clone(), sender, |sender| {
            tokio::spawn(resolve_every(sender, service, name, interval))
        }))
    }
}

/// Re-resolve until nobody watches any more. A failed lookup keeps the
/// last list: an unreachable resolver says nothing about the instances,
/// and the balancer ejects dead ones itself.
async fn resolve_every(
    sender: watch::Sender<Instances>,
    service: String,
    name: String,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = sender.closed() => return,
            _ = ticks.tick() => {}
        }
        if let Some(instances) = resolve(&service, &name).await {
            publish(&sender, &service, instances);
        }
    }
}

async fn resolve(service: &str, name: &str) -> Option<Vec<Instance>> {
    match tokio::net::lookup_host(name).await {
        Ok(addresses) => Some(
            addresses
                .map(|address| address_instance(service, address))
                .collect(),
        ),
        Err(error) => {
            tracing::warn!(%service, %name, %error, "DNS lookup failed; keeping the last instances");
            None
        }
    }
}

fn address_instance(service: &str, address: SocketAddr) -> Instance {
    // `SocketAddr` prints IPv6 in brackets, as a URL needs.
    Instance {
        id: address.to_string(),
        service: service.to_owned(),
        url: format!("http://{address}"),
        version: String::new(),
        zone: None,
    }
}
