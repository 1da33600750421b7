//! Offers: the allocator's decisions turned into offers, rescinds and their expiry.

use super::*;

impl Master {
    /// Rescinds every outstanding offer that matches.
    pub(super) fn rescind_where(&mut self, matches: impl Fn(&OfferRecord) -> bool) {
        let offers: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| matches(o))
            .map(|(id, _)| id.clone())
            .collect();
        for offer in offers {
            self.rescind(&offer);
        }
    }

    pub(super) fn rescind(&mut self, offer_id: &str) {
        let Some(offer) = self.offers.remove(offer_id) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        self.allocator
            .recover(&offer.framework_id, &offer.agent_id, &offer.resources, None);
        self.send_event(&offer.framework_id, &Event::rescind(Id::new(offer_id)));
    }

    /// The periodic work: heartbeats, dropped streams, failover timeouts, offer timeouts.
    pub fn tick(&mut self, now_ms: u64) {
        // Streams whose HTTP client went away.
        let dropped: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.stream.as_ref().is_some_and(|(_, tx)| tx.is_closed()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            self.framework_disconnected(&id, now_ms);
        }
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                !f.completed
                    && f.disconnected_at_ms
                        .is_some_and(|at| now_ms >= at + f.failover_timeout_ms())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.teardown(&id, "failover timeout");
        }
        if let Some(timeout) = self.tuning.offer_timeout_ms {
            let old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now_ms >= o.created_ms + timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for offer in old {
                self.rescind(&offer);
            }
        }
        self.check_recovered(now_ms);
    }

    pub fn heartbeat(&mut self) {
        self.operator_heartbeat();
        let heartbeat = record(&Event::heartbeat());
        for f in self.frameworks.values() {
            if let Some((_, tx)) = f.stream.as_ref() {
                let _ = tx.try_send(heartbeat.clone());
            }
        }
    }

    pub(super) fn framework_disconnected(&mut self, framework_id: &str, now_ms: u64) {
        self.rescind_where(|o| o.framework_id == framework_id);
        self.allocator.deactivate(framework_id);
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.stream = None;
            f.disconnected_at_ms = Some(now_ms);
        }
        self.env.emit(NodeEvent::new("framework_disconnected"));
    }

    /// One allocation cycle: offers go out to frameworks.
    pub fn allocate(&mut self, now_ms: u64) {
        if self.recovering_until_ms.is_some() {
            return;
        }
        let allocations = {
            let mut rng = self.env.rng();
            self.allocator.allocate(now_ms, &mut *rng)
        };
        self.counters.allocation_runs += 1;
        let mut batches: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for allocation in allocations {
            let Some(agent) = self.agents.get(&allocation.agent) else {
                continue;
            };
            let role = self
                .frameworks
                .get(&allocation.framework)
                .map(|f| f.role.clone())
                .unwrap_or_else(|| "*".into());
            let attributes = attributes_json(&agent.attributes);
            let hostname = agent.hostname.clone();
            let url = v1::Url {
                scheme: "http".into(),
                address: v1::Address {
                    hostname: agent.hostname.clone(),
                    // An address, or nothing when the agent is reached by its name.
                    ip: agent
                        .address
                        .parse::<std::net::IpAddr>()
                        .map(|_| agent.address.clone())
                        .unwrap_or_default(),
                    port: agent.port,
                },
                path: "/slave(1)".into(),
            };
            let id = self.fresh_id("O");
            batches
                .entry(allocation.framework.clone())
                .or_default()
                .push(v1::Offer {
                    id: Id::new(&id),
                    framework_id: Id::new(&allocation.framework),
                    agent_id: Id::new(&allocation.agent),
                    hostname,
                    resources: v1::to_mesos(&allocation.resources, Some(&role)),
                    attributes,
                    allocation_info: Some(v1::AllocationInfo { role }),
                    url: Some(url),
                });
            self.offers.insert(
                id,
                OfferRecord {
                    framework_id: allocation.framework,
                    agent_id: allocation.agent,
                    resources: allocation.resources,
                    created_ms: now_ms,
                },
            );
        }
        for (framework, offers) in batches {
            self.counters.offers_sent += offers.len() as u64;
            let count = offers.len();
            if !self.send_event(&framework, &Event::offers(offers.clone())) {
                for offer in offers {
                    self.rescind(&offer.id.value);
                }
            } else if !self.offered {
                self.offered = true;
                self.env.emit(
                    NodeEvent::new("first_offers")
                        .with("framework", &framework)
                        .with("offers", count),
                );
            }
        }
    }
}
