//! Deployments: a new target for the group tree turned into steps (Marathon's plan), restarts,
//! and cancelling or deleting a running deployment.

use super::*;

/// A running deployment: its plan and where it is.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub plan: DeploymentPlan,
    /// The apps before the deployment (for apps the plan touches).
    pub original: BTreeMap<PathId, AppDefinition>,
    /// Index of the step being carried out.
    pub step: usize,
}

impl Deployment {
    /// The step that brings `app` to its target (its last).
    pub(super) fn step_of(&self, app: &PathId) -> Option<usize> {
        self.plan
            .steps
            .iter()
            .rposition(|s| s.actions.iter().any(|a| a.app() == app))
    }

    pub fn to_storage_json(&self) -> Value {
        json!({
            "id": self.plan.id,
            "version": self.plan.version,
            "step": self.step,
            "affectedApps": self.plan.affected_apps.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "steps": self.plan.steps.iter().map(|s| s.actions.iter().map(|a| {
                let mut v = a.to_json();
                if let Action::Scale { to, .. } = a { v["to"] = json!(to); }
                v
            }).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "original": self.original.values().map(AppDefinition::to_storage_json).collect::<Vec<_>>(),
        })
    }

    pub fn from_storage_json(value: &Value) -> Result<Deployment, String> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("deployment: expected a string at `{key}`"))
        };
        let mut steps = Vec::new();
        for (i, step) in value
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("deployment: expected an array at `steps`")?
            .iter()
            .enumerate()
        {
            let mut actions = Vec::new();
            for (j, a) in step.as_array().into_iter().flatten().enumerate() {
                let at = format!("deployment: steps[{i}][{j}]");
                let app = PathId::parse(
                    a.get("app")
                        .and_then(Value::as_str)
                        .ok_or(format!("{at}.app: expected a string"))?,
                );
                actions.push(match a.get("action").and_then(Value::as_str) {
                    Some("StartApplication") => Action::Start { app },
                    Some("ScaleApplication") => Action::Scale {
                        app,
                        to: a.get("to").and_then(Value::as_u64).unwrap_or(0) as u32,
                    },
                    Some("RestartApplication") => Action::Restart { app },
                    Some("StopApplication") => Action::Stop { app },
                    other => return Err(format!("{at}.action: unknown action {other:?}")),
                });
            }
            steps.push(plan::Step { actions });
        }
        let mut original = BTreeMap::new();
        for a in value
            .get("original")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let app = AppDefinition::from_storage_json(a)
                .map_err(|e| format!("deployment original app: {}", e.message()))?;
            original.insert(app.id.clone(), app);
        }
        Ok(Deployment {
            plan: DeploymentPlan {
                id: text("id")?,
                version: text("version")?,
                affected_apps: value
                    .get("affectedApps")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(PathId::parse)
                    .collect(),
                steps,
            },
            original,
            step: value.get("step").and_then(Value::as_u64).unwrap_or(0) as usize,
        })
    }
}

impl Scheduler {
    /// `POST /v2/apps/{id}/restart`: the same definition under a new configuration version,
    /// rolled out within its `upgradeStrategy`.
    pub fn restart_app(
        &mut self,
        id: &PathId,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), ApiError> {
        let Some(app) = self.root.app(id).cloned() else {
            return Err(ApiError::not_found(format!("App '{id}' does not exist")));
        };
        if let Some(d) = self
            .deployments
            .values()
            .find(|d| d.plan.affected_apps.contains(id))
        {
            if !force {
                return Err(locked(std::slice::from_ref(&d.plan.id)));
            }
            let old = d.plan.id.clone();
            self.cancel_deployment(&old, fx);
        }
        let version = self.now_version();
        let mut target = self.root.put_app(app.clone(), &version)?;
        target.version = Some(version.clone());
        self.set_root(target, fx);
        // A new configuration even though the definition is the same.
        self.app_meta
            .insert(id.clone(), (version.clone(), version.clone()));
        if let Some(app) = self.root.app(id) {
            fx.store.push(StoreOp::Put {
                key: format!("{}/{}", keys::APPS, keys::encode(id)),
                data: stored_app_json(app, &version, &version)
                    .to_string()
                    .into_bytes(),
            });
        }
        self.announce_target(id, app.instances);
        let deployment_id = self.new_id();
        let mut affected = BTreeSet::new();
        affected.insert(id.clone());
        let mut original = BTreeMap::new();
        original.insert(id.clone(), app);
        let deployment = Deployment {
            plan: DeploymentPlan {
                id: deployment_id.clone(),
                version: version.clone(),
                affected_apps: affected,
                steps: vec![plan::Step {
                    actions: vec![Action::Restart { app: id.clone() }],
                }],
            },
            original,
            step: 0,
        };
        self.counters.deployments_started += 1;
        self.env.emit(
            Event::new("deployment")
                .with("id", &deployment_id)
                .with("steps", 1),
        );
        fx.store.push(StoreOp::Put {
            key: format!("{}/{deployment_id}", keys::DEPLOYMENTS),
            data: deployment.to_storage_json().to_string().into_bytes(),
        });
        self.deployments.insert(deployment_id.clone(), deployment);
        Ok((deployment_id, version))
    }

    /// Replaces the root by `target`, starting a deployment for the difference. 409 when the
    /// plan touches an app of a running deployment, unless `force` (which cancels those).
    pub fn deploy(
        &mut self,
        target: Group,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), ApiError> {
        let version = target.version.clone().unwrap_or_else(|| self.now_version());
        let id = self.new_id();
        let plan = DeploymentPlan::new(id.clone(), version.clone(), &self.root, &target);
        let conflicts: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.plan.conflicts_with(&plan))
            .map(|d| d.plan.id.clone())
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(locked(&conflicts));
        }
        for old in conflicts {
            self.cancel_deployment(&old, fx);
        }
        let original: BTreeMap<PathId, AppDefinition> = self
            .root
            .transitive_apps()
            .into_iter()
            .filter(|(id, _)| plan.affected_apps.contains(id))
            .map(|(id, app)| (id, app.clone()))
            .collect();
        self.set_root(target, fx);
        for app in &plan.affected_apps {
            let before = original.get(app).map_or(0, |a| a.instances);
            self.announce_target(app, before);
        }
        // The dependencies each dependent app waits for, for the trace's dependency_order check.
        let graph = self.root.dependency_graph();
        let apps = self.root.transitive_apps();
        for app in &plan.affected_apps {
            for dep in graph.get(app).into_iter().flatten() {
                if let Some(dep_app) = apps.get(dep) {
                    self.env.emit(
                        Event::new("depends")
                            .with("app", app)
                            .with("on", dep)
                            .with("count", dep_app.instances),
                    );
                }
            }
        }
        if plan.is_empty() {
            return Ok((id, version));
        }
        self.counters.deployments_started += 1;
        let deployment = Deployment {
            plan,
            original,
            step: 0,
        };
        self.env.emit(
            Event::new("deployment")
                .with("id", &id)
                .with("steps", deployment.plan.steps.len()),
        );
        fx.event(
            "deployment_info",
            json!({"plan": self.plan_event_json(&deployment), "currentStep": deployment.plan.steps.first().map(plan::Step::to_json)}),
            self.env.unix_ms(),
        );
        fx.store.push(StoreOp::Put {
            key: format!("{}/{id}", keys::DEPLOYMENTS),
            data: deployment.to_storage_json().to_string().into_bytes(),
        });
        self.deployments.insert(id.clone(), deployment);
        Ok((id, version))
    }

    /// Tells the trace how many tasks `app` may run at most from now on (the `no_overscale`
    /// invariant): its target, or during a rolling restart the upgrade strategy's capacity.
    pub(super) fn announce_target(&self, app: &PathId, before: u32) {
        let target = self.root.app(app).map_or(0, |a| {
            a.instances
                .max(plan::restart_bounds(a.instances, &a.upgrade_strategy).max_capacity)
        });
        self.env.emit(
            Event::new("app_target")
                .with("app", app)
                .with("max", target.max(before)),
        );
    }

    /// Stores the root's groups and apps that changed, and new app versions.
    pub(super) fn set_root(&mut self, target: Group, fx: &mut Effects) {
        let version = target.version.clone().unwrap_or_else(|| self.now_version());
        let old_apps: BTreeMap<PathId, AppDefinition> = self
            .root
            .transitive_apps()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let new_apps = target.transitive_apps();
        for (id, app) in &new_apps {
            let old = old_apps.get(id);
            if old == Some(*app) {
                continue;
            }
            let app_version = app.version.clone().unwrap_or_else(|| version.clone());
            let meta = match (old, self.app_meta.get(id)) {
                (Some(old), Some((config, _))) if !old.is_upgrade(app) => {
                    (config.clone(), app_version.clone())
                }
                _ => (app_version.clone(), app_version.clone()),
            };
            if meta.0 == app_version {
                // A new configuration: the launch delay starts over.
                self.backoff.remove(id);
            }
            self.app_meta.insert(id.clone(), meta.clone());
            fx.store.push(StoreOp::Put {
                key: format!("{}/{}", keys::APPS, keys::encode(id)),
                data: stored_app_json(app, &meta.0, &meta.1)
                    .to_string()
                    .into_bytes(),
            });
            let versions = self.versions.entry(id.clone()).or_default();
            if versions.last() != Some(&app_version) {
                versions.push(app_version.clone());
                fx.store.push(StoreOp::Put {
                    key: format!(
                        "{}/{}/{}",
                        keys::APP_VERSIONS,
                        keys::encode(id),
                        app_version
                    ),
                    data: app.to_storage_json().to_string().into_bytes(),
                });
                while versions.len() > MAX_VERSIONS {
                    let gone = versions.remove(0);
                    fx.store.push(StoreOp::Delete {
                        key: format!("{}/{}/{gone}", keys::APP_VERSIONS, keys::encode(id)),
                    });
                }
            }
        }
        for id in old_apps.keys() {
            if !new_apps.contains_key(id) {
                self.app_meta.remove(id);
                fx.store.push(StoreOp::Delete {
                    key: format!("{}/{}", keys::APPS, keys::encode(id)),
                });
            }
        }
        let old_groups: BTreeMap<PathId, Value> = self
            .root
            .transitive_groups()
            .into_iter()
            .map(|(k, g)| (k, group_json(g)))
            .collect();
        let new_groups: BTreeMap<PathId, Value> = target
            .transitive_groups()
            .into_iter()
            .map(|(k, g)| (k, group_json(g)))
            .collect();
        for (id, g) in &new_groups {
            if old_groups.get(id) != Some(g) {
                fx.store.push(StoreOp::Put {
                    key: format!("{}/{}", keys::GROUPS, keys::encode(id)),
                    data: g.to_string().into_bytes(),
                });
            }
        }
        for id in old_groups.keys() {
            if !new_groups.contains_key(id) {
                fx.store.push(StoreOp::Delete {
                    key: format!("{}/{}", keys::GROUPS, keys::encode(id)),
                });
            }
        }
        for (id, g) in self.root.transitive_groups() {
            if target.group(&id) != Some(g) {
                let list = self.group_versions.entry(id).or_default();
                list.push((g.version.clone().unwrap_or_default(), g.clone()));
                if list.len() > MAX_VERSIONS {
                    list.remove(0);
                }
            }
        }
        fx.event(
            "group_change_success",
            json!({"groupId": "/", "version": version}),
            self.env.unix_ms(),
        );
        self.root = target;
    }

    /// Drops a deployment where it stands (the root keeps its target).
    pub(super) fn cancel_deployment(&mut self, id: &str, fx: &mut Effects) {
        if let Some(d) = self.deployments.remove(id) {
            self.env
                .emit(Event::new("deployment_canceled").with("id", id));
            fx.store.push(StoreOp::Delete {
                key: format!("{}/{id}", keys::DEPLOYMENTS),
            });
            fx.event(
                "deployment_failed",
                json!({"id": id, "plan": self.plan_event_json(&d)}),
                self.env.unix_ms(),
            );
        }
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stop where it stands (the affected apps keep
    /// the instances they have now); otherwise roll back to the apps before it.
    pub fn delete_deployment(
        &mut self,
        id: &str,
        force: bool,
        fx: &mut Effects,
    ) -> Result<Option<(String, String)>, ApiError> {
        let Some(d) = self.deployments.get(id).cloned() else {
            return Err(ApiError::not_found(format!(
                "DeploymentPlan {id} does not exist"
            )));
        };
        let version = self.now_version();
        if force {
            let mut target = self.root.clone();
            for app_id in &d.plan.affected_apps {
                if let Some(app) = target.app(app_id) {
                    let mut app = app.clone();
                    app.instances = self.active(app_id).len() as u32;
                    target = target.put_app(app, &version)?;
                }
            }
            self.cancel_deployment(id, fx);
            self.set_root(target, fx);
            return Ok(None);
        }
        let mut target = self.root.clone();
        for app_id in &d.plan.affected_apps {
            target = match d.original.get(app_id) {
                Some(app) => target.put_app(app.clone(), &version)?,
                None => target.remove_app(app_id, &version),
            };
        }
        target.version = Some(version);
        self.deploy(target, true, fx).map(Some)
    }
}

/// Marathon's 409 for an app that running deployments hold.
fn locked(deployments: &[String]) -> ApiError {
    ApiError {
        status: 409,
        body: json!({
            "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
            "deployments": deployments.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
        }),
    }
}
