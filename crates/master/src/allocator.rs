//! The allocator: who gets offered what, by Dominant Resource Fairness.
//!
//! Like Mesos' hierarchical allocator: each cycle visits the agents in a seeded random order, and
//! offers an agent's available resources to the role with the lowest weighted dominant share, and
//! within it to the framework with the lowest dominant share. Resources reserved for a role go only
//! to that role's frameworks. A framework that declined resources with a filter is not offered the
//! same (or less) on that agent until the filter expires; a suppressed framework is offered
//! nothing until it revives. Offered and used resources both count as allocated.
//!
//! Shares are kept as plain numbers: what a framework or a role holds is summed per scalar
//! resource (name and role) in thousandths, so ranking one after a grant costs no bag arithmetic;
//! the bags (what a framework holds on each agent, what each agent has given) are kept for what
//! needs them (recovering, reports). Ids are shared strings, so a key costs no allocation.
//!
//! Everything here is plain data and arithmetic: time comes in as `now_ms`, randomness as an RNG.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use drover_core::resources::{Resources, Value, ANY_ROLE};
use rand::seq::SliceRandom;
use rand::RngCore;

pub type AgentId = String;
pub type FrameworkId = String;

/// An id as the allocator keeps it: shared, so that keys and orders clone without allocating.
type Name = Arc<str>;

/// The default of Mesos' `--min_allocatable_resources`: an offer must hold at least one of these.
pub fn default_min_allocatable() -> Vec<Resources> {
    ["cpus:0.01", "mem:32"]
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// What one allocation gave: `resources` of `agent`, offered to `framework`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: Resources,
}

#[derive(Clone, Debug)]
struct Agent {
    total: Resources,
    allocated: Resources,
}

/// Scalar quantities held, in thousandths, indexed by the allocator's scalar slots.
#[derive(Clone, Debug, Default)]
struct Sums(Vec<u64>);

impl Sums {
    fn add(&mut self, slot: usize, amount: u64, grant: bool) {
        if self.0.len() <= slot {
            self.0.resize(slot + 1, 0);
        }
        let held = &mut self.0[slot];
        *held = if grant {
            held.saturating_add(amount)
        } else {
            held.saturating_sub(amount)
        };
    }
}

#[derive(Clone, Debug)]
struct Framework {
    role: Name,
    suppressed: bool,
    /// Disconnected from the master: offered nothing, but keeps what it uses.
    inactive: bool,
    /// What `on_agents` holds, summed per scalar slot (the numerators of its share).
    held: Sums,
    /// What the framework holds on each agent.
    on_agents: BTreeMap<Name, Resources>,
    /// Per agent: resources declined with a filter, and until when.
    filters: BTreeMap<Name, (Resources, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Role {
    weight_millis: u64,
    /// What the role's frameworks hold, summed per scalar slot.
    held: Sums,
    /// Active (unsuppressed) frameworks ordered by (share, id).
    order: BTreeSet<(u64, Name)>,
}

/// One scalar resource as shares count it: a name reserved for a role (`cpus` of `*` and `cpus`
/// of `web` are two), and the index of the name's cluster total.
#[derive(Clone, Debug)]
struct Slot {
    name: Name,
    role: Name,
    total: usize,
}

/// The allocator's state: agents, frameworks, roles and what is allocated to whom.
#[derive(Clone, Debug)]
pub struct Allocator {
    agents: BTreeMap<Name, Agent>,
    frameworks: BTreeMap<Name, Framework>,
    roles: BTreeMap<Name, Role>,
    /// Roles with active frameworks, ordered by (weighted share, name).
    role_order: BTreeSet<(u64, Name)>,
    /// Cluster totals per scalar resource name (the denominators of shares), in thousandths.
    totals: Vec<(Name, u64)>,
    slots: Vec<Slot>,
    min_allocatable: Vec<Resources>,
    /// Reused by every grant: the (slot, amount) pairs it changes.
    scratch: Vec<(usize, u64)>,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator::new(default_min_allocatable())
    }
}

/// Parts per billion: shares as integers, so ordering is exact and portable.
const SHARE_SCALE: u128 = 1_000_000_000;

fn role_named(weight_millis: u64) -> Role {
    Role {
        weight_millis,
        ..Role::default()
    }
}

impl Allocator {
    pub fn new(min_allocatable: Vec<Resources>) -> Self {
        Allocator {
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            roles: BTreeMap::new(),
            role_order: BTreeSet::new(),
            totals: Vec::new(),
            slots: Vec::new(),
            min_allocatable,
            scratch: Vec::new(),
        }
    }

    /// Sets a role's weight (default 1): its fair share grows with it.
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let millis = (weight * 1000.0).round().clamp(1.0, 1e12) as u64;
        self.unrank_role(role);
        self.roles
            .entry(role.into())
            .or_insert_with(|| role_named(1000))
            .weight_millis = millis;
        self.rank_role(role);
    }

    /// The index of a name's cluster total (made at 0 when new).
    fn total_index(&mut self, name: &str) -> usize {
        match self.totals.iter().position(|(n, _)| &**n == name) {
            Some(index) => index,
            None => {
                self.totals.push((name.into(), 0));
                self.totals.len() - 1
            }
        }
    }

    /// The slot of scalar `name` reserved for `role` (made when new).
    fn slot(&mut self, name: &str, role: &str) -> usize {
        if let Some(index) = self
            .slots
            .iter()
            .position(|s| &*s.name == name && &*s.role == role)
        {
            return index;
        }
        let total = self.total_index(name);
        self.slots.push(Slot {
            name: name.into(),
            role: role.into(),
            total,
        });
        self.slots.len() - 1
    }

    pub fn add_agent(&mut self, id: &str, total: Resources) {
        self.remove_agent(id);
        for (name, _, value) in total.iter() {
            if let Value::Scalar(s) = value {
                let index = self.total_index(name);
                self.totals[index].1 += s.thousandths();
            }
        }
        self.agents.insert(
            id.into(),
            Agent {
                total,
                allocated: Resources::new(),
            },
        );
        self.rerank_all();
    }

    /// Forgets an agent, and what was allocated on it.
    pub fn remove_agent(&mut self, id: &str) {
        let holders: Vec<(Name, Resources)> = self
            .frameworks
            .iter()
            .filter_map(|(f, fw)| fw.on_agents.get(id).map(|r| (f.clone(), r.clone())))
            .collect();
        for (framework, resources) in holders {
            self.recover(&framework, id, &resources, None);
        }
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        for (name, _, value) in agent.total.iter() {
            if let Value::Scalar(s) = value {
                let index = self.total_index(name);
                let total = &mut self.totals[index].1;
                *total = total.saturating_sub(s.thousandths());
            }
        }
        for framework in self.frameworks.values_mut() {
            framework.filters.remove(id);
        }
        // Frameworks' allocations on the agent are recovered by the caller's bookkeeping (it
        // knows which tasks and offers were there); shares are recomputed from what remains.
        self.rerank_all();
    }

    pub fn add_framework(&mut self, id: &str, role: &str) {
        self.remove_framework(id);
        let role: Name = match self.roles.get_key_value(role) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Name = role.into();
                self.roles.insert(name.clone(), role_named(1000));
                name
            }
        };
        self.frameworks.insert(
            id.into(),
            Framework {
                role,
                suppressed: false,
                inactive: false,
                held: Sums::default(),
                on_agents: BTreeMap::new(),
                filters: BTreeMap::new(),
            },
        );
        self.rank_framework(id);
    }

    /// Removes a framework and gives back everything allocated to it (on every agent).
    pub fn remove_framework(&mut self, id: &str) {
        let held: Vec<(Name, Resources)> = match self.frameworks.get(id) {
            Some(f) => f
                .on_agents
                .iter()
                .map(|(a, r)| (a.clone(), r.clone()))
                .collect(),
            None => return,
        };
        for (agent, resources) in held {
            self.recover(id, &agent, &resources, None);
        }
        self.unrank_framework(id);
        self.frameworks.remove(id);
    }

    /// Stops offers to the framework until it revives.
    pub fn suppress(&mut self, id: &str) {
        self.unrank_framework(id);
        if let Some(f) = self.frameworks.get_mut(id) {
            f.suppressed = true;
        }
    }

    /// Offers nothing to a framework while it is disconnected (its suppression and filters stay).
    pub fn deactivate(&mut self, id: &str) {
        self.unrank_framework(id);
        if let Some(f) = self.frameworks.get_mut(id) {
            f.inactive = true;
        }
    }

    /// The framework is connected again.
    pub fn activate(&mut self, id: &str) {
        if let Some(f) = self.frameworks.get_mut(id) {
            f.inactive = false;
        }
        self.unrank_framework(id);
        self.rank_framework(id);
    }

    /// Counts resources a framework already uses on an agent (tasks found on a re-registering
    /// agent) as allocated to it.
    pub fn add_used(&mut self, framework: &str, agent: &str, resources: &Resources) {
        self.reallocate(framework, agent, resources, true);
    }

    /// Resumes offers and clears the framework's filters.
    pub fn revive(&mut self, id: &str) {
        if let Some(f) = self.frameworks.get_mut(id) {
            f.suppressed = false;
            f.filters.clear();
        }
        self.unrank_framework(id);
        self.rank_framework(id);
    }

    /// Gives back resources allocated to `framework` on `agent` (a declined or rescinded offer, a
    /// finished task). With `refuse_until_ms`, the framework is not offered these resources (or
    /// fewer) on that agent before then.
    pub fn recover(
        &mut self,
        framework: &str,
        agent: &str,
        resources: &Resources,
        refuse_until_ms: Option<u64>,
    ) {
        self.reallocate(framework, agent, resources, false);
        if let (Some(until), Some(f)) = (refuse_until_ms, self.frameworks.get_mut(framework)) {
            f.filters.insert(agent.into(), (resources.clone(), until));
        }
    }

    /// Adds resources of `agent` to `framework`'s allocation (`grant`), or takes them back, and
    /// moves the framework and its role to their new places in the DRF order.
    fn reallocate(&mut self, framework: &str, agent: &str, resources: &Resources, grant: bool) {
        let Some(f) = self.frameworks.get(framework) else {
            return;
        };
        let (role, ranked) = (f.role.clone(), !f.suppressed && !f.inactive);
        let old_framework_key = self.framework_key(framework);
        let old_role_key = self.role_key(&role);
        let agent_name: Name = match self.agents.get_key_value(agent) {
            Some((name, _)) => name.clone(),
            None => agent.into(),
        };
        if let Some(a) = self.agents.get_mut(agent) {
            if grant {
                a.allocated.add(resources);
            } else {
                a.allocated = a.allocated.checked_sub(resources).unwrap_or_default();
            }
        }
        // What the framework's sums change by: what was granted, or what its bag on the agent
        // really gave back (all of it when asked for more than it held).
        let mut delta = None;
        if let Some(f) = self.frameworks.get_mut(framework) {
            let held = f.on_agents.entry(agent_name).or_default();
            if grant {
                held.add(resources);
            } else {
                match held.checked_sub(resources) {
                    Some(rest) => *held = rest,
                    None => delta = Some(std::mem::take(held)),
                }
            }
            if held.is_empty() {
                f.on_agents.remove(agent);
            }
        }
        let delta = delta.as_ref().unwrap_or(resources);
        let mut changes = std::mem::take(&mut self.scratch);
        changes.clear();
        for (name, reserved_for, value) in delta.iter() {
            if let Value::Scalar(s) = value {
                changes.push((self.slot(name, reserved_for), s.thousandths()));
            }
        }
        if let Some(f) = self.frameworks.get_mut(framework) {
            for &(slot, amount) in &changes {
                f.held.add(slot, amount, grant);
            }
        }
        let new_framework_key = self.framework_key(framework);
        let Some(r) = self.roles.get_mut(&role) else {
            self.scratch = changes;
            return;
        };
        for &(slot, amount) in &changes {
            r.held.add(slot, amount, grant);
        }
        self.scratch = changes;
        if let (true, Some(old), Some(new)) = (ranked, old_framework_key, new_framework_key) {
            r.order.remove(&old);
            r.order.insert(new);
        }
        let active = !r.order.is_empty();
        let new_role_key = self.role_key(&role);
        if let Some(old) = old_role_key {
            self.role_order.remove(&old);
        }
        if let (true, Some(new)) = (active, new_role_key) {
            self.role_order.insert(new);
        }
    }

    /// What is free on an agent.
    pub fn available(&self, agent: &str) -> Option<Resources> {
        let a = self.agents.get(agent)?;
        a.total.checked_sub(&a.allocated)
    }

    /// One allocation cycle over every agent, in an order drawn from `rng`.
    pub fn allocate(&mut self, now_ms: u64, rng: &mut impl RngCore) -> Vec<Allocation> {
        let mut agents: Vec<Name> = self.agents.keys().cloned().collect();
        agents.shuffle(rng);
        let mut out = Vec::new();
        for agent in agents {
            self.allocate_agent(&agent, now_ms, &mut out);
        }
        out
    }

    /// Enough to be worth an offer: at least one of the minimums, counted as quantities (a
    /// reservation's role does not matter here).
    fn allocatable(&self, resources: &Resources) -> bool {
        let enough = |min: &Resources| {
            min.iter().all(|(name, _, value)| match value {
                Value::Scalar(needed) => resources.scalar(name) >= *needed,
                _ => true,
            })
        };
        !resources.is_empty() && self.min_allocatable.iter().any(enough)
    }

    /// Whether `framework` may be offered `offerable` on `agent` (no filter of its holds it back).
    fn unfiltered(&self, framework: &str, agent: &str, offerable: &Resources, now_ms: u64) -> bool {
        self.frameworks
            .get(framework)
            .is_some_and(|fw| match fw.filters.get(agent) {
                Some((refused, until)) => now_ms >= *until || !refused.contains(offerable),
                None => true,
            })
    }

    /// The first framework of `role`'s DRF order that may be offered `offerable` on `agent`.
    fn first_taker(
        &self,
        role: &str,
        agent: &str,
        offerable: &Resources,
        now_ms: u64,
    ) -> Option<Name> {
        let order = &self.roles.get(role)?.order;
        order
            .iter()
            .map(|(_, f)| f)
            .find(|f| self.unfiltered(f, agent, offerable, now_ms))
            .cloned()
    }

    fn allocate_agent(&mut self, agent: &Name, now_ms: u64, out: &mut Vec<Allocation>) {
        let Some(mut available) = self.available(agent) else {
            return;
        };
        if !self.allocatable(&available) {
            return;
        }
        // Roles by weighted share, then their frameworks by share: the first one that takes
        // resources here gets all it may have of them.
        let reserved = available.iter().any(|(_, role, _)| role != ANY_ROLE);
        if !reserved {
            // Every role may have all of it (the common case, kept cheap).
            let chosen = self
                .role_order
                .iter()
                .find_map(|(_, role)| self.first_taker(role, agent, &available, now_ms));
            if let Some(framework) = chosen {
                self.reallocate(&framework, agent, &available, true);
                out.push(Allocation {
                    framework: framework.to_string(),
                    agent: agent.to_string(),
                    resources: available,
                });
            }
            return;
        }
        let roles: Vec<Name> = self.role_order.iter().map(|(_, r)| r.clone()).collect();
        for role in roles {
            let offerable = offerable_to(&available, &role);
            if !self.allocatable(&offerable) {
                continue;
            }
            let Some(framework) = self.first_taker(&role, agent, &offerable, now_ms) else {
                continue;
            };
            self.reallocate(&framework, agent, &offerable, true);
            available = available.checked_sub(&offerable).unwrap_or_default();
            out.push(Allocation {
                framework: framework.to_string(),
                agent: agent.to_string(),
                resources: offerable,
            });
            if !self.allocatable(&available) {
                return;
            }
        }
    }

    /// The dominant share of what is held: the largest fraction of any scalar's cluster total.
    fn share(&self, held: &Sums) -> u64 {
        let mut best = 0u128;
        for (slot, amount) in self.slots.iter().zip(&held.0) {
            let total = self.totals[slot.total].1;
            if *amount > 0 && total > 0 {
                best = best.max(u128::from(*amount) * SHARE_SCALE / u128::from(total));
            }
        }
        best.min(u128::from(u64::MAX)) as u64
    }

    fn framework_key(&self, id: &str) -> Option<(u64, Name)> {
        let (name, f) = self.frameworks.get_key_value(id)?;
        Some((self.share(&f.held), name.clone()))
    }

    fn rank_framework(&mut self, id: &str) {
        let Some(f) = self.frameworks.get(id) else {
            return;
        };
        if f.suppressed || f.inactive {
            return;
        }
        let role = f.role.clone();
        if let Some(key) = self.framework_key(id) {
            self.unrank_role(&role);
            if let Some(r) = self.roles.get_mut(&role) {
                r.order.insert(key);
            }
            self.rank_role(&role);
        }
    }

    fn unrank_framework(&mut self, id: &str) {
        let Some(key) = self.framework_key(id) else {
            return;
        };
        let Some(role) = self.frameworks.get(id).map(|f| f.role.clone()) else {
            return;
        };
        self.unrank_role(&role);
        if let Some(r) = self.roles.get_mut(&role) {
            r.order.remove(&key);
        }
        self.rank_role(&role);
    }

    fn role_key(&self, role: &str) -> Option<(u64, Name)> {
        let (name, r) = self.roles.get_key_value(role)?;
        let weighted = u128::from(self.share(&r.held)) * 1000 / u128::from(r.weight_millis.max(1));
        Some((weighted.min(u128::from(u64::MAX)) as u64, name.clone()))
    }

    fn rank_role(&mut self, role: &str) {
        if self.roles.get(role).is_some_and(|r| !r.order.is_empty()) {
            if let Some(key) = self.role_key(role) {
                self.role_order.insert(key);
            }
        }
    }

    fn unrank_role(&mut self, role: &str) {
        if let Some(key) = self.role_key(role) {
            self.role_order.remove(&key);
        }
    }

    /// Totals changed: every share may have moved.
    fn rerank_all(&mut self) {
        let ids: Vec<Name> = self.frameworks.keys().cloned().collect();
        self.role_order.clear();
        for role in self.roles.values_mut() {
            role.order.clear();
        }
        for id in ids {
            self.rank_framework(&id);
        }
    }

    /// The dominant share of a framework, as a fraction (for reports and tests).
    pub fn framework_share(&self, id: &str) -> f64 {
        self.frameworks
            .get(id)
            .map_or(0.0, |f| self.share(&f.held) as f64 / SHARE_SCALE as f64)
    }

    /// What is allocated to a framework across all agents.
    pub fn allocated_to(&self, id: &str) -> Resources {
        let mut all = Resources::new();
        if let Some(f) = self.frameworks.get(id) {
            for held in f.on_agents.values() {
                all.add(held);
            }
        }
        all
    }
}

/// The part of `available` a framework of `role` may be offered: unreserved resources and those
/// reserved for its role.
fn offerable_to(available: &Resources, role: &str) -> Resources {
    let mut out = available.for_role(ANY_ROLE);
    if role != ANY_ROLE {
        out.add(&available.for_role(role));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn r(text: &str) -> Resources {
        text.parse().unwrap()
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn one_agent_goes_whole_to_one_framework() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:4;mem:1024;ports:[31000-32000]"));
        allocator.add_framework("f1", "*");
        let offers = allocator.allocate(0, &mut rng());
        assert_eq!(
            offers,
            vec![Allocation {
                framework: "f1".into(),
                agent: "a1".into(),
                resources: r("cpus:4;mem:1024;ports:[31000-32000]")
            }]
        );
        assert!(
            allocator.allocate(0, &mut rng()).is_empty(),
            "nothing left to offer"
        );
    }

    #[test]
    fn giving_back_the_same_ports_of_two_agents_keeps_the_share_of_the_rest() {
        // Every agent has the same port range: what a framework holds on three agents must not be
        // summed as one bag (the ranges would merge, and giving two back would find the second's
        // ports already gone and zero the framework's share while it still holds the third).
        let mut allocator = Allocator::default();
        for i in 0..3 {
            allocator.add_agent(&format!("a{i}"), r("cpus:1;mem:64;ports:[31000-32000]"));
        }
        allocator.add_framework("f1", "*");
        let mut offers = allocator.allocate(0, &mut rng());
        assert_eq!(offers.len(), 3);
        for offer in offers.drain(..2) {
            allocator.recover("f1", &offer.agent, &offer.resources, None);
        }
        assert_eq!(allocator.framework_share("f1"), 0.333_333_333);
        assert_eq!(
            allocator.allocated_to("f1"),
            r("cpus:1;mem:64;ports:[31000-32000]")
        );
    }

    #[test]
    fn drf_spreads_agents_between_equal_frameworks() {
        let mut allocator = Allocator::default();
        for i in 0..10 {
            allocator.add_agent(&format!("a{i}"), r("cpus:4;mem:4096"));
        }
        allocator.add_framework("f1", "*");
        allocator.add_framework("f2", "*");
        let offers = allocator.allocate(0, &mut rng());
        let count = |f: &str| offers.iter().filter(|o| o.framework == f).count();
        assert_eq!((count("f1"), count("f2")), (5, 5));
        assert_eq!(allocator.framework_share("f1"), 0.5);
    }

    #[test]
    fn weights_give_roles_proportional_shares() {
        let mut allocator = Allocator::default();
        for i in 0..12 {
            allocator.add_agent(&format!("a{i}"), r("cpus:1;mem:1024"));
        }
        allocator.add_framework("web", "web");
        allocator.add_framework("batch", "batch");
        allocator.set_weight("web", 2.0);
        let offers = allocator.allocate(0, &mut rng());
        let count = |f: &str| offers.iter().filter(|o| o.framework == f).count();
        assert_eq!((count("web"), count("batch")), (8, 4));
    }

    #[test]
    fn a_filter_holds_until_it_expires_and_revive_clears_it() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:4;mem:1024"));
        allocator.add_framework("f1", "*");
        let offer = allocator.allocate(0, &mut rng()).remove(0);
        allocator.recover("f1", "a1", &offer.resources, Some(5_000));
        assert!(allocator.allocate(1_000, &mut rng()).is_empty());
        assert_eq!(allocator.allocate(5_000, &mut rng()).len(), 1);
        let offer = allocator.allocate(5_000, &mut rng());
        assert!(offer.is_empty());
        allocator.recover("f1", "a1", &r("cpus:4;mem:1024"), Some(60_000));
        allocator.revive("f1");
        assert_eq!(allocator.allocate(6_000, &mut rng()).len(), 1);
    }

    #[test]
    fn a_filtered_framework_leaves_the_agent_to_others() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:4;mem:1024"));
        allocator.add_framework("f1", "*");
        allocator.add_framework("f2", "*");
        let first = allocator.allocate(0, &mut rng()).remove(0);
        allocator.recover(&first.framework, "a1", &first.resources, Some(5_000));
        let second = allocator.allocate(0, &mut rng()).remove(0);
        assert_ne!(second.framework, first.framework);
    }

    #[test]
    fn suppressed_frameworks_get_nothing() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:4;mem:1024"));
        allocator.add_framework("f1", "*");
        allocator.suppress("f1");
        assert!(allocator.allocate(0, &mut rng()).is_empty());
        allocator.revive("f1");
        assert_eq!(allocator.allocate(0, &mut rng()).len(), 1);
    }

    #[test]
    fn reservations_go_only_to_their_role() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus(web):2;mem(web):512;cpus:1;mem:256"));
        allocator.add_framework("batch", "batch");
        let offers = allocator.allocate(0, &mut rng());
        assert_eq!(offers[0].resources, r("cpus:1;mem:256"));
        allocator.add_framework("web", "web");
        let offers = allocator.allocate(0, &mut rng());
        assert_eq!(
            offers,
            vec![Allocation {
                framework: "web".into(),
                agent: "a1".into(),
                resources: r("cpus(web):2;mem(web):512")
            }]
        );
    }

    #[test]
    fn removing_a_framework_frees_its_agents() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:4;mem:1024"));
        allocator.add_framework("f1", "*");
        allocator.add_framework("f2", "*");
        let first = allocator.allocate(0, &mut rng()).remove(0);
        allocator.remove_framework(&first.framework);
        let second = allocator.allocate(0, &mut rng());
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].framework, first.framework);
        assert_eq!(second[0].resources, r("cpus:4;mem:1024"));
    }

    #[test]
    fn too_little_is_not_offered() {
        let mut allocator = Allocator::default();
        allocator.add_agent("a1", r("cpus:0.005;mem:16;disk:100"));
        allocator.add_framework("f1", "*");
        assert!(allocator.allocate(0, &mut rng()).is_empty());
    }

    #[test]
    fn the_same_seed_gives_the_same_offers() {
        let build = || {
            let mut allocator = Allocator::default();
            for i in 0..50 {
                allocator.add_agent(&format!("a{i}"), r("cpus:2;mem:2048"));
            }
            for f in 0..7 {
                allocator.add_framework(&format!("f{f}"), "*");
            }
            allocator
        };
        let first = build().allocate(0, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(
            first,
            build().allocate(0, &mut ChaCha8Rng::seed_from_u64(3))
        );
        assert_ne!(
            first,
            build().allocate(0, &mut ChaCha8Rng::seed_from_u64(4))
        );
    }

    proptest! {
        #[test]
        fn never_overcommits_an_agent(
            agents in prop::collection::vec((1u64..16, 1u64..8192), 1..20),
            frameworks in 1usize..6,
            steps in prop::collection::vec((0usize..6, 0usize..20, any::<bool>()), 0..40),
        ) {
            let mut allocator = Allocator::default();
            for (i, (cpus, mem)) in agents.iter().enumerate() {
                allocator.add_agent(&format!("a{i}"), r(&format!("cpus:{cpus};mem:{mem}")));
            }
            for f in 0..frameworks {
                allocator.add_framework(&format!("f{f}"), if f % 2 == 0 { "*" } else { "web" });
            }
            let mut held: Vec<Allocation> = Vec::new();
            let mut random = rng();
            for (now, (who, which, decline)) in steps.into_iter().enumerate() {
                held.extend(allocator.allocate(now as u64 * 1000, &mut random));
                if decline && !held.is_empty() {
                    let offer = held.remove(which % held.len());
                    allocator.recover(&offer.framework, &offer.agent, &offer.resources, Some(now as u64 * 1000 + 500));
                }
                if who < frameworks && who % 3 == 0 {
                    allocator.revive(&format!("f{who}"));
                }
                for (i, (cpus, mem)) in agents.iter().enumerate() {
                    let agent = format!("a{i}");
                    let mut given = Resources::new();
                    for offer in held.iter().filter(|o| o.agent == agent) {
                        given.add(&offer.resources);
                    }
                    let total = r(&format!("cpus:{cpus};mem:{mem}"));
                    prop_assert!(total.contains(&given), "{agent}: {given} offered of {total}");
                }
            }
        }
    }
}
