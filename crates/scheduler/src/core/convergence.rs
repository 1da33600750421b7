//! Convergence: each app's active instances against what it should have now; deployments
//! advancing step by step; revives.

use super::*;

impl Scheduler {
    /// What an app should run now: (count, configuration), or None while a deployment holds
    /// it at its previous state (count of the original, or 0 for a new app).
    pub(super) fn want(&self, id: &PathId) -> (u32, bool) {
        for d in self.deployments.values() {
            if let Some(step) = d.step_of(id) {
                if d.step < step {
                    return (d.original.get(id).map_or(0, |a| a.instances), true);
                }
            }
        }
        (self.root.app(id).map_or(0, |a| a.instances), false)
    }

    /// One pass over every app: queue launches, kill extras and old configurations, advance
    /// deployments.
    pub fn converge(&mut self, now_ms: u64, fx: &mut Effects) {
        // Steps already done first: the apps of the next step may launch in this same pass.
        self.advance_deployments(fx);
        let apps: Vec<PathId> = self.root.transitive_apps().into_keys().collect();
        let mut queue = BTreeMap::new();
        // Instances of apps no longer in the root are killed.
        let gone: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.is_active() && !i.kill_requested)
            .filter(|i| self.root.app(&PathId::parse(&i.app)).is_none())
            .map(|i| i.task_id.clone())
            .collect();
        for task in gone {
            self.kill(&task, fx);
        }
        for id in &apps {
            let Some(app) = self.root.app(id).cloned() else {
                continue;
            };
            let (count, held) = self.want(id);
            let config = self
                .app_meta
                .get(id)
                .map(|m| m.0.clone())
                .unwrap_or_default();
            let checks = !app.health_checks.is_empty();
            // Decided on borrowed instances (an app may have tens of thousands: cloning them on
            // every pass was most of a large simulation's time), then carried out.
            let (launches, kills) = self.plan_app(id, &app, &config, count, held, checks);
            for task in kills {
                self.kill(&task, fx);
            }
            if launches > 0 {
                queue.insert(id.clone(), launches);
            }
        }
        // Work that was not waiting before: offers refused for a while are wanted again.
        let new_work = queue.keys().any(|id| !self.queue.contains_key(id));
        self.queue = queue;
        self.advance_deployments(fx);
        if (new_work && !self.suppressed) || (!self.queue.is_empty() && self.suppressed) {
            self.suppressed = false;
            self.revive(now_ms, fx);
        }
    }

    /// How many instances of `id` to launch and which to kill, so that `count` run with
    /// `config` within the app's upgrade strategy (`held`: the config is not being changed).
    fn plan_app(
        &self,
        id: &PathId,
        app: &AppDefinition,
        config: &str,
        count: u32,
        held: bool,
        checks: bool,
    ) -> (u32, Vec<String>) {
        let active = self.active(id);
        let (new, old): (Vec<&Instance>, Vec<&Instance>) = active
            .iter()
            .copied()
            .filter(|i| !i.kill_requested)
            .partition(|i| i.config == config || held);
        let total = active.len() as u32;
        let mut launches = 0u32;
        let mut kills: Vec<String> = Vec::new();
        if old.is_empty() {
            let live = new.len() as u32;
            if live < count {
                launches = count - live;
            } else if live > count {
                let mut victims = new.clone();
                victims.sort_by(|a, b| (a.staged_at, &a.task_id).cmp(&(b.staged_at, &b.task_id)));
                if app.kill_selection == KillSelection::YoungestFirst {
                    victims.reverse();
                }
                // Not-yet-running ones go first either way.
                victims.sort_by_key(|i| i.is_running());
                kills.extend(
                    victims
                        .iter()
                        .take((live - count) as usize)
                        .map(|i| i.task_id.clone()),
                );
            }
        } else {
            let bounds = plan::restart_bounds(count, &app.upgrade_strategy);
            let ready_new = new
                .iter()
                .filter(|i| self.is_ready(i, config, checks))
                .count() as u32;
            let new_count = new.len() as u32;
            if new_count < count && total < bounds.max_capacity {
                launches = (count - new_count).min(bounds.max_capacity - total);
            }
            let mut old_sorted = old.clone();
            old_sorted.sort_by(|a, b| {
                (a.is_running(), a.staged_at, &a.task_id).cmp(&(
                    b.is_running(),
                    b.staged_at,
                    &b.task_id,
                ))
            });
            let mut old_left = old.len() as u32;
            for i in old_sorted {
                let healthy_after = ready_new + old_left - 1;
                let must = !i.is_running() || healthy_after >= bounds.min_healthy;
                if must || old_left + new_count > count.max(bounds.max_capacity) {
                    kills.push(i.task_id.clone());
                    old_left -= 1;
                }
            }
        }
        (launches, kills)
    }

    pub(super) fn revive(&mut self, now_ms: u64, fx: &mut Effects) {
        self.last_revive_ms = now_ms;
        fx.calls.push(bare(CallType::Revive));
    }

    /// While instances wait and no offer came for `REVIVE_REPEAT_MS` since the last REVIVE,
    /// asks again, as Marathon repeats its revives: a REVIVE can be lost with a connection, and
    /// offers declined for long stay away until one arrives.
    pub fn repeat_revive(&mut self, now_ms: u64, fx: &mut Effects) {
        let quiet_since = self.last_revive_ms.max(self.last_offer_ms);
        if self.launch_ready && !self.queue.is_empty() && now_ms >= quiet_since + REVIVE_REPEAT_MS {
            self.revive(now_ms, fx);
        }
    }

    /// Moves each deployment past the steps that are done.
    pub(super) fn advance_deployments(&mut self, fx: &mut Effects) {
        let ids: Vec<String> = self.deployments.keys().cloned().collect();
        for id in ids {
            while let Some(d) = self.deployments.get(&id) {
                let Some(step) = d.plan.steps.get(d.step) else {
                    break;
                };
                if !step.actions.iter().all(|a| self.action_done(a)) {
                    break;
                }
                let step_json = step.to_json();
                let next = d.step + 1;
                let total = d.plan.steps.len();
                self.env.emit(
                    Event::new("deployment_step")
                        .with("id", &id)
                        .with("step", next),
                );
                fx.event(
                    "deployment_step_success",
                    json!({"plan": self.plan_event_json(d), "currentStep": step_json}),
                    self.env.unix_ms(),
                );
                if next >= total {
                    let d = self.deployments.remove(&id);
                    self.counters.deployments_done += 1;
                    self.env.emit(Event::new("deployment_done").with("id", &id));
                    fx.store.push(StoreOp::Delete {
                        key: format!("{}/{id}", keys::DEPLOYMENTS),
                    });
                    if let Some(d) = d {
                        fx.event(
                            "deployment_success",
                            json!({"id": id, "plan": self.plan_event_json(&d)}),
                            self.env.unix_ms(),
                        );
                    }
                    break;
                }
                if let Some(d) = self.deployments.get_mut(&id) {
                    d.step = next;
                    fx.store.push(StoreOp::Put {
                        key: format!("{}/{id}", keys::DEPLOYMENTS),
                        data: d.to_storage_json().to_string().into_bytes(),
                    });
                }
            }
        }
    }

    pub(super) fn action_done(&self, action: &Action) -> bool {
        let id = action.app();
        let active = self.active(id);
        match action {
            Action::Start { .. } => true,
            Action::Stop { .. } => active.is_empty(),
            Action::Scale { .. } | Action::Restart { .. } => {
                let Some(app) = self.root.app(id) else {
                    return true;
                };
                let config = self.app_meta.get(id).map(|m| m.0.as_str()).unwrap_or("");
                let checks = self.has_health_checks(id);
                let ready = active
                    .iter()
                    .filter(|i| self.is_ready(i, config, checks))
                    .count() as u32;
                ready == app.instances && active.len() as u32 == app.instances
            }
        }
    }
}
