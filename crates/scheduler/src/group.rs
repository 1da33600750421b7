//! Groups: the tree of apps under the root group `/`, group updates (the bodies of
//! `POST`/`PUT /v2/groups`), dependency resolution and cycle detection.
//!
//! # Ids
//!
//! Relative ids are resolved as Marathon does: the top-level id of an update against the
//! group in the URL (`/` for `/v2/groups`); a nested group's id against its enclosing group; an
//! app's id and an app's dependencies against the group the app is in; a group's dependencies
//! against the group itself (so `../group1` names a sibling group). A nested group or app must
//! be a direct child of its enclosing group (`Identifier is not child of '/arm-demo'`).
//!
//! # Dependencies
//!
//! An app depends on the apps it names, on every app under a group it names, and inherits the
//! dependencies of every group it sits in; a group's dependency on a group means each app under
//! the first on each app under the second. Ids naming nothing add no edge (Marathon's rule).
//! [`Group::dependency_graph`] flattens all this into app → apps; a cycle in it (including
//! an app that ends up depending on itself) is refused with Marathon's 422
//! "Dependency graph has cyclic dependencies.".
//!
//! # Updates
//!
//! [`Group::apply_update`] implements `POST` (create: 409 when the group or an app with that
//! id exists) and `PUT` (create or update) of a subtree: fields absent from the body keep what
//! the group has; `apps` present replaces the group's apps; `groups` present replaces its
//! subgroups (each listed group updated recursively, unlisted ones removed); `dependencies`
//! present replaces them. Missing parent groups are created (`mkdir -p`). `scaleBy` multiplies
//! every app's instances under the group (rounded up). Reverting to an old `version` needs the
//! stored history, so it is left to the caller ([`UpdateKind::Revert`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use serde_json::{json, Value};

use crate::app::AppDefinition;
use crate::decode::{self, index_path, Ctx, Fields};
use crate::path::PathId;
use crate::validation::{ApiError, CYCLIC_DEPENDENCIES};

/// Marathon's service-port range (`--local_port_min`/`--local_port_max`).
pub const SERVICE_PORTS: RangeInclusive<u32> = 10000..=20000;

/// Marathon's message when a group and an app share an id.
pub const GROUP_APP_CLASH: &str = "Groups and Applications may not have the same identifier.";

/// A group and everything under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub id: PathId,
    pub apps: BTreeMap<PathId, AppDefinition>,
    pub groups: BTreeMap<PathId, Group>,
    pub dependencies: BTreeSet<PathId>,
    pub version: Option<String>,
}

/// A parsed group body: every field optional, ids absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupUpdate {
    pub id: Option<PathId>,
    pub apps: Option<Vec<AppDefinition>>,
    pub groups: Option<Vec<GroupUpdate>>,
    pub dependencies: Option<Vec<PathId>>,
    pub scale_by: Option<f64>,
    pub version: Option<String>,
    /// Fields not modelled (`pods`, `enforceRole`, ...): kept, ignored.
    pub unknown: BTreeMap<String, Value>,
}

/// What an update asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateKind {
    /// Create or change the tree.
    Structure,
    /// Multiply the instances of every app under the group.
    ScaleBy(f64),
    /// Go back to a stored version of the group (the caller looks it up, then
    /// [`Group::put_group`]).
    Revert(String),
}

/// `POST` (create only) or `PUT` (create or update).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    Create,
    Update,
}

impl GroupUpdate {
    pub fn kind(&self) -> UpdateKind {
        match (&self.version, self.scale_by) {
            (Some(v), _) => UpdateKind::Revert(v.clone()),
            (None, Some(s)) => UpdateKind::ScaleBy(s),
            _ => UpdateKind::Structure,
        }
    }

    /// The group this update is about, given the group of the URL.
    pub fn effective_id(&self, base: &PathId) -> PathId {
        self.id.clone().unwrap_or_else(|| base.clone())
    }
}

impl Group {
    pub fn empty(id: PathId) -> Group {
        Group {
            id,
            apps: BTreeMap::new(),
            groups: BTreeMap::new(),
            dependencies: BTreeSet::new(),
            version: None,
        }
    }

    /// The empty root group `/`.
    pub fn root() -> Group {
        Group::empty(PathId::root())
    }

    /// The group with this id (itself included), if any.
    pub fn group(&self, id: &PathId) -> Option<&Group> {
        if *id == self.id {
            return Some(self);
        }
        if !self.id.is_ancestor_of(id) {
            return None;
        }
        let next = self.id.child(&id.segments()[self.id.segments().len()]);
        self.groups.get(&next)?.group(id)
    }

    /// The app with this id anywhere below, if any.
    pub fn app(&self, id: &PathId) -> Option<&AppDefinition> {
        self.group(&id.parent())?.apps.get(id)
    }

    /// Every app under this group, by id.
    pub fn transitive_apps(&self) -> BTreeMap<PathId, &AppDefinition> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self];
        while let Some(g) = stack.pop() {
            out.extend(g.apps.iter().map(|(id, app)| (id.clone(), app)));
            stack.extend(g.groups.values());
        }
        out
    }

    /// Every group under this one (itself included), by id.
    pub fn transitive_groups(&self) -> BTreeMap<PathId, &Group> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self];
        while let Some(g) = stack.pop() {
            out.insert(g.id.clone(), g);
            stack.extend(g.groups.values());
        }
        out
    }

    /// Each app's effective dependencies (app ids), over the whole tree below `self`.
    pub fn dependency_graph(&self) -> BTreeMap<PathId, BTreeSet<PathId>> {
        let groups = self.transitive_groups();
        let apps = self.transitive_apps();
        let expand = |id: &PathId, into: &mut BTreeSet<PathId>| {
            if apps.contains_key(id) {
                into.insert(id.clone());
            } else if let Some(g) = groups.get(id) {
                into.extend(g.transitive_apps().into_keys());
            }
        };
        let mut out = BTreeMap::new();
        // (group, dependencies inherited from the groups above it)
        let mut stack: Vec<(&Group, BTreeSet<PathId>)> = vec![(self, BTreeSet::new())];
        while let Some((g, inherited)) = stack.pop() {
            let mut here = inherited;
            for dep in &g.dependencies {
                expand(dep, &mut here);
            }
            for (id, app) in &g.apps {
                let mut deps = here.clone();
                for dep in &app.dependencies {
                    expand(dep, &mut deps);
                }
                out.insert(id.clone(), deps);
            }
            for child in g.groups.values() {
                stack.push((child, here.clone()));
            }
        }
        out
    }

    /// Marathon's root-group checks: no group shares an id with an app, no dependency cycle.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut violations = Vec::new();
        for g in self.transitive_groups().values() {
            if g.groups.keys().any(|id| g.apps.contains_key(id)) {
                violations.push(("/".to_string(), GROUP_APP_CLASH.to_string()));
                break;
            }
        }
        if find_cycle(&self.dependency_graph()).is_some() {
            violations.push(("/".to_string(), CYCLIC_DEPENDENCIES.to_string()));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::not_valid(&violations))
        }
    }

    /// Puts `group` at its id (replacing what was there), creating missing parents.
    pub fn put_group(&self, group: Group, version: &str) -> Group {
        if group.id == self.id {
            return group;
        }
        if !self.id.is_ancestor_of(&group.id) {
            return self.clone(); // not below this group: nothing to do
        }
        let mut out = self.clone();
        out.version = Some(version.to_string());
        let next = self
            .id
            .child(&group.id.segments()[self.id.segments().len()]);
        let child = self
            .groups
            .get(&next)
            .cloned()
            .unwrap_or_else(|| Group::empty(next.clone()));
        let child = child.put_group(group, version);
        out.groups.insert(next, child);
        out
    }

    /// Puts one app (`POST`/`PUT /v2/apps`), creating missing groups; refuses a cycle or a
    /// clash with a group.
    pub fn put_app(&self, app: AppDefinition, version: &str) -> Result<Group, ApiError> {
        if self.group(&app.id).is_some() {
            return Err(ApiError::not_valid(&[("/".into(), GROUP_APP_CLASH.into())]));
        }
        let parent_id = app.id.parent();
        let mut parent = self
            .group(&parent_id)
            .cloned()
            .unwrap_or_else(|| Group::empty(parent_id.clone()));
        parent.version = Some(version.to_string());
        let mut app = app;
        app.version = Some(version.to_string());
        parent.apps.insert(app.id.clone(), app);
        let mut out = self.put_group(parent, version);
        assign_service_ports(&mut out, self, SERVICE_PORTS);
        keep_unchanged_versions(&mut out, self);
        out.validate()?;
        Ok(out)
    }

    /// This tree without the app (unchanged when there is none).
    pub fn remove_app(&self, id: &PathId, version: &str) -> Group {
        match self.group(&id.parent()) {
            Some(parent) if parent.apps.contains_key(id) => {
                let mut parent = parent.clone();
                parent.apps.remove(id);
                parent.version = Some(version.to_string());
                self.put_group(parent, version)
            }
            _ => self.clone(),
        }
    }

    /// This tree without the group and everything under it. Removing `self.id` empties it.
    pub fn remove_group(&self, id: &PathId, version: &str) -> Group {
        if *id == self.id {
            let mut out = Group::empty(self.id.clone());
            out.version = Some(version.to_string());
            return out;
        }
        match self.group(&id.parent()) {
            Some(parent) if parent.groups.contains_key(id) => {
                let mut parent = parent.clone();
                parent.groups.remove(id);
                parent.version = Some(version.to_string());
                self.put_group(parent, version)
            }
            _ => self.clone(),
        }
    }

    /// Applies a group body to this (root) group. `base` is the group of the URL
    /// (`/` for `/v2/groups`). Conflicts are 409; an invalid result is 422.
    pub fn apply_update(
        &self,
        base: &PathId,
        update: &GroupUpdate,
        mode: UpdateMode,
        version: &str,
    ) -> Result<Group, ApiError> {
        let effective = update.effective_id(base);
        if mode == UpdateMode::Create {
            if self.group(&effective).is_some() {
                return Err(ApiError::conflict(format!(
                    "Group {effective} is already created. Use PUT to change this group."
                )));
            }
            if self.app(&effective).is_some() {
                return Err(ApiError::conflict(format!(
                    "An app with the path {effective} already exists."
                )));
            }
        }
        let current = self
            .group(&effective)
            .cloned()
            .unwrap_or_else(|| Group::empty(effective));
        let updated = match update.kind() {
            UpdateKind::Structure => merge(&current, update, version),
            UpdateKind::ScaleBy(factor) => scale(&current, factor, version),
            UpdateKind::Revert(v) => {
                return Err(ApiError::unprocessable(format!(
                    "Group {} not available in version {v}",
                    current.id
                )))
            }
        };
        let mut out = self.put_group(updated, version);
        assign_service_ports(&mut out, self, SERVICE_PORTS);
        keep_unchanged_versions(&mut out, self);
        out.validate()?;
        Ok(out)
    }

    /// The group in Marathon's response shape (`GET /v2/groups`).
    pub fn to_marathon_json(&self) -> Value {
        let version = self.version.as_deref();
        json!({
            "id": self.id.to_string(),
            "apps": self.apps.values().map(|a| {
                a.to_marathon_json(a.version.as_deref().or(version).unwrap_or(""))
            }).collect::<Vec<_>>(),
            "groups": self.groups.values().map(Group::to_marathon_json).collect::<Vec<_>>(),
            "pods": [],
            "dependencies": self.dependencies.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "version": version,
        })
    }
}

/// The group after a structural update (Marathon's create-or-update of a subtree).
fn merge(current: &Group, update: &GroupUpdate, version: &str) -> Group {
    let mut out = Group::empty(current.id.clone());
    out.version = Some(version.to_string());
    out.dependencies = match &update.dependencies {
        Some(deps) => deps.iter().cloned().collect(),
        None => current.dependencies.clone(),
    };
    out.apps = match &update.apps {
        Some(apps) => apps
            .iter()
            .map(|app| {
                let mut app = app.clone();
                app.version = Some(version.to_string());
                (app.id.clone(), app)
            })
            .collect(),
        None => current.apps.clone(),
    };
    out.groups = match &update.groups {
        Some(groups) => groups
            .iter()
            .map(|g| {
                let id = g.effective_id(&current.id);
                let existing = current
                    .groups
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Group::empty(id.clone()));
                (id, merge(&existing, g, version))
            })
            .collect(),
        None => current.groups.clone(),
    };
    out
}

fn scale(current: &Group, factor: f64, version: &str) -> Group {
    let mut out = current.clone();
    out.version = Some(version.to_string());
    for app in out.apps.values_mut() {
        let scaled = (f64::from(app.instances) * factor).ceil();
        app.instances = if scaled.is_finite() && scaled > 0.0 {
            scaled.min(f64::from(i32::MAX)) as u32
        } else {
            0
        };
        app.version = Some(version.to_string());
    }
    out.groups = current
        .groups
        .iter()
        .map(|(id, g)| (id.clone(), scale(g, factor, version)))
        .collect();
    out
}

/// A dependency cycle, as the apps along it (first = last), if there is one. Deterministic:
/// apps are visited in id order.
pub fn find_cycle(graph: &BTreeMap<PathId, BTreeSet<PathId>>) -> Option<Vec<PathId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: BTreeMap<&PathId, Mark> = BTreeMap::new();
    let empty = BTreeSet::new();
    for start in graph.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // (node, its dependencies not yet visited)
        let mut stack: Vec<(&PathId, Vec<&PathId>)> = vec![(
            start,
            graph.get(start).unwrap_or(&empty).iter().rev().collect(),
        )];
        marks.insert(start, Mark::Active);
        while let Some((node, pending)) = stack.last_mut() {
            let node: &PathId = node;
            match pending.pop() {
                Some(next) => match marks.get(next) {
                    Some(Mark::Done) => {}
                    Some(Mark::Active) => {
                        let at = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<PathId> =
                            stack[at..].iter().map(|(n, _)| (*n).clone()).collect();
                        cycle.push(next.clone());
                        return Some(cycle);
                    }
                    None => {
                        marks.insert(next, Mark::Active);
                        let deps = graph.get(next).unwrap_or(&empty).iter().rev().collect();
                        stack.push((next, deps));
                    }
                },
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
    }
    None
}

/// Gives every service port 0 a port from `range` (Marathon picks at random; drover picks the
/// lowest free one, so the result is deterministic). An app that existed in `original` gets its
/// previous port back at the same index when that port is still free, so resubmitting an app
/// does not move its ports (and does not restart it).
pub fn assign_service_ports(root: &mut Group, original: &Group, range: RangeInclusive<u32>) {
    let apps: Vec<PathId> = root.transitive_apps().into_keys().collect();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for id in &apps {
        if let Some(app) = root.app(id) {
            used.extend(app.service_ports().into_iter().filter(|p| *p != 0));
        }
    }
    for id in apps {
        let previous: Vec<u32> = original
            .app(&id)
            .map(|a| a.service_ports())
            .unwrap_or_default();
        let Some(app) = app_mut(root, &id) else {
            continue;
        };
        let bridge = app.uses_port_mappings();
        let mut ports: Vec<&mut u32> = if bridge {
            match app.container.as_mut().and_then(|c| c.docker.as_mut()) {
                Some(d) => d
                    .port_mappings
                    .iter_mut()
                    .map(|m| &mut m.service_port)
                    .collect(),
                None => Vec::new(),
            }
        } else {
            app.port_definitions
                .iter_mut()
                .map(|p| &mut p.port)
                .collect()
        };
        for (i, port) in ports.iter_mut().enumerate() {
            if **port != 0 {
                continue;
            }
            let reuse = previous
                .get(i)
                .copied()
                .filter(|p| *p != 0 && !used.contains(p));
            let pick = reuse.or_else(|| range.clone().find(|p| !used.contains(p)));
            if let Some(p) = pick {
                **port = p;
                used.insert(p);
            }
        }
    }
}

/// An app that a change left as it was keeps its old version: resubmitting a definition is
/// not a change (and does not restart anything).
fn keep_unchanged_versions(root: &mut Group, original: &Group) {
    let ids: Vec<PathId> = root.transitive_apps().into_keys().collect();
    for id in ids {
        let Some(old) = original.app(&id) else {
            continue;
        };
        if let Some(app) = app_mut(root, &id) {
            if !old.is_upgrade(app) && old.instances == app.instances {
                app.version = old.version.clone();
            }
        }
    }
}

fn app_mut<'a>(root: &'a mut Group, id: &PathId) -> Option<&'a mut AppDefinition> {
    let parent = id.parent();
    let mut g = root;
    while g.id != parent {
        if !g.id.is_ancestor_of(&parent) {
            return None;
        }
        let next = g.id.child(&parent.segments()[g.id.segments().len()]);
        g = g.groups.get_mut(&next)?;
    }
    g.apps.get_mut(id)
}

// ---------------------------------------------------------------------------------------------
// Reading

const KNOWN: &[&str] = &["id", "apps", "groups", "dependencies", "scaleBy", "version"];

/// Reads a group body at `path`. `base` is the group the id is relative to (the URL's group for
/// the document, the enclosing group for nested ones).
pub(crate) fn decode_group_update(
    value: &Value,
    path: &str,
    base: &PathId,
    nested: bool,
    ctx: &mut Ctx,
) -> Option<GroupUpdate> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let errors_before = ctx.json.len();

    let raw_id = if nested {
        f.required_string("id", ctx)
    } else {
        f.string("id", ctx)
    };
    let id = raw_id.map(|raw| {
        let parsed = PathId::parse(&raw);
        let resolved = parsed.resolve(base);
        let at = f.at("id");
        if let Err(msg) = parsed.validate() {
            ctx.violation(&at, msg);
        } else if nested && resolved.parent() != *base {
            ctx.violation(&at, format!("Identifier is not child of '{base}'"));
        } else if nested && resolved.is_root() {
            ctx.violation(&at, crate::path::EMPTY_PATH);
        }
        resolved
    });
    let here = id.clone().unwrap_or_else(|| base.clone());

    let apps = f.array("apps", ctx).map(|items| {
        let at = f.at("apps");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index_path(&at, i);
                let app = crate::app::decode_app(item, &p, &here, true, ctx)?;
                crate::validation::check_app(&app, &p, ctx);
                Some(app)
            })
            .collect::<Vec<_>>()
    });
    let groups = f.array("groups", ctx).map(|items| {
        let at = f.at("groups");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                decode_group_update(item, &index_path(&at, i), &here, true, ctx)
            })
            .collect::<Vec<_>>()
    });
    let dependencies = f.strings("dependencies", ctx).map(|deps| {
        let at = f.at("dependencies");
        let mut out: Vec<PathId> = Vec::new();
        for (i, dep) in deps.iter().enumerate() {
            let parsed = PathId::parse(dep);
            match parsed.validate() {
                Err(msg) => ctx.violation(&index_path(&at, i), msg),
                Ok(()) => {
                    let resolved = parsed.resolve(&here);
                    if !out.contains(&resolved) {
                        out.push(resolved);
                    }
                }
            }
        }
        out
    });
    let scale_by = f.f64("scaleBy", ctx);
    if let Some(s) = scale_by {
        if !(s >= 0.0 && s.is_finite()) {
            ctx.violation(
                &f.at("scaleBy"),
                format!("got {}, expected 0.0 or more", decode::java_double(s)),
            );
        }
    }
    let version = f.string("version", ctx);
    let others = apps.is_some() || groups.is_some() || dependencies.is_some();
    for (key, set) in [
        ("version", version.is_some()),
        ("scaleBy", scale_by.is_some()),
    ] {
        let other_special = if key == "version" {
            scale_by.is_some()
        } else {
            version.is_some()
        };
        if set && (others || other_special) {
            ctx.violation(
                &f.at(key),
                "not allowed in conjunction with other properties.",
            );
        }
    }
    let unknown = obj
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    if ctx.json.len() > errors_before {
        return None;
    }
    Some(GroupUpdate {
        id,
        apps,
        groups,
        dependencies,
        scale_by,
        version,
        unknown,
    })
}

/// Reads a group body (`POST`/`PUT /v2/groups[/{base}]`): relative ids are resolved against
/// `base`. Dependency cycles are found when the update is applied to the root group
/// ([`crate::group::Group::apply_update`]), since they can run through groups the body does not
/// list.
pub fn parse_group(body: &[u8], base: &PathId) -> Result<GroupUpdate, ApiError> {
    let value = crate::validation::parse_json(body)?;
    let mut ctx = Ctx::default();
    let update = decode_group_update(&value, "", base, false, &mut ctx);
    crate::validation::finish(update, ctx)
}

#[cfg(test)]
mod tests {
    use super::parse_group;
    use super::*;

    const BASIC: &str = include_str!("../../../apps/basic.json");

    fn p(s: &str) -> PathId {
        PathId::parse(s)
    }

    fn basic_root() -> Group {
        let update = parse_group(BASIC.as_bytes(), &PathId::root()).unwrap();
        Group::root()
            .apply_update(&PathId::root(), &update, UpdateMode::Create, "v1")
            .unwrap()
    }

    #[test]
    fn basic_json_verbatim() {
        let update = parse_group(BASIC.as_bytes(), &PathId::root()).unwrap();
        assert_eq!(update.id, Some(p("/arm-demo")));
        let groups = update.groups.as_ref().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].dependencies, Some(vec![p("/arm-demo/group1")]));

        let root = basic_root();
        let demo = root.group(&p("/arm-demo")).unwrap();
        assert_eq!(demo.groups.len(), 2);
        let g2 = root.group(&p("/arm-demo/group2")).unwrap();
        assert_eq!(g2.dependencies, BTreeSet::from([p("/arm-demo/group1")]));
        let app = root.app(&p("/arm-demo/group1/ubuntu1")).unwrap();
        assert_eq!(app.instances, 2);
        assert_eq!(app.cpus, 0.25);
        assert_eq!(app.disk, 1000.0);
        let docker = app.container.as_ref().unwrap().docker.as_ref().unwrap();
        assert_eq!(docker.image, "ubuntu:16.04");
        assert_eq!(docker.parameters[0].value, "ubuntu1.weave.local");
        assert!(app.port_definitions.is_empty());

        let graph = root.dependency_graph();
        assert_eq!(
            graph[&p("/arm-demo/group2/ubuntu2")],
            BTreeSet::from([p("/arm-demo/group1/ubuntu1")])
        );
        assert!(graph[&p("/arm-demo/group1/ubuntu1")].is_empty());

        let json = root.to_marathon_json();
        assert_eq!(json["groups"][0]["id"], "/arm-demo");
        assert_eq!(
            json["groups"][0]["groups"][1]["dependencies"],
            json!(["/arm-demo/group1"])
        );
        assert_eq!(json["groups"][0]["groups"][0]["apps"][0]["version"], "v1");
    }

    #[test]
    fn post_twice_conflicts_put_updates() {
        let root = basic_root();
        let update = parse_group(BASIC.as_bytes(), &PathId::root()).unwrap();
        let err = root
            .apply_update(&PathId::root(), &update, UpdateMode::Create, "v2")
            .unwrap_err();
        assert_eq!(err.status, 409);
        assert_eq!(
            err.body["message"],
            "Group /arm-demo is already created. Use PUT to change this group."
        );
        // PUT of the same body changes nothing about the apps (versions kept).
        let again = root
            .apply_update(&PathId::root(), &update, UpdateMode::Update, "v2")
            .unwrap();
        assert_eq!(again.transitive_apps(), root.transitive_apps());
    }

    #[test]
    fn relative_ids_and_partial_update() {
        let root = basic_root();
        // PUT /v2/groups/arm-demo/group1 with a relative app id: replaces its apps.
        let body = br#"{"apps":[{"id":"web","cmd":"sleep 1","dependencies":["../group2"]}]}"#;
        let base = p("/arm-demo/group1");
        let update = parse_group(body, &base).unwrap();
        assert_eq!(
            update.apps.as_ref().unwrap()[0].id,
            p("/arm-demo/group1/web")
        );
        assert_eq!(
            update.apps.as_ref().unwrap()[0].dependencies,
            vec![p("/arm-demo/group2")]
        );
        // web -> group2 -> group1 (which now holds web): a cycle.
        let err = root
            .apply_update(&base, &update, UpdateMode::Update, "v2")
            .unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(
            err.body,
            json!({"message": "Object is not valid",
                   "details": [{"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}]})
        );
        // Without the dependency it applies; group2 keeps its apps.
        let body = br#"{"apps":[{"id":"web","cmd":"sleep 1"}]}"#;
        let update = parse_group(body, &base).unwrap();
        let new = root
            .apply_update(&base, &update, UpdateMode::Update, "v2")
            .unwrap();
        assert!(new.app(&p("/arm-demo/group1/ubuntu1")).is_none());
        assert!(new.app(&p("/arm-demo/group1/web")).is_some());
        assert!(new.app(&p("/arm-demo/group2/ubuntu2")).is_some());
        // the new app got a service port
        assert_eq!(
            new.app(&p("/arm-demo/group1/web"))
                .unwrap()
                .port_definitions[0]
                .port,
            10000
        );
    }

    #[test]
    fn nested_ids_must_be_children() {
        let body = br#"{"id":"/a","groups":[{"id":"/b/c"}],"apps":[{"id":"x/y","cmd":"z"}]}"#;
        let err = parse_group(body, &PathId::root()).unwrap_err();
        assert_eq!(err.status, 422);
        let details = err.body["details"].as_array().unwrap();
        let paths: Vec<&str> = details
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, vec!["/apps(0)/id", "/groups(0)/id"]);
        assert_eq!(details[1]["errors"][0], "Identifier is not child of '/a'");
    }

    #[test]
    fn scale_and_remove() {
        let root = basic_root();
        let update = parse_group(br#"{"scaleBy": 1.5}"#, &p("/arm-demo")).unwrap();
        let scaled = root
            .apply_update(&p("/arm-demo"), &update, UpdateMode::Update, "v2")
            .unwrap();
        assert_eq!(
            scaled
                .app(&p("/arm-demo/group2/ubuntu2"))
                .unwrap()
                .instances,
            3
        );
        let removed = scaled.remove_group(&p("/arm-demo/group1"), "v3");
        assert!(removed.group(&p("/arm-demo/group1")).is_none());
        assert_eq!(removed.transitive_apps().len(), 1);
        let removed = removed.remove_app(&p("/arm-demo/group2/ubuntu2"), "v4");
        assert!(removed.transitive_apps().is_empty());
        let err = parse_group(br#"{"scaleBy": 2, "apps": []}"#, &PathId::root()).unwrap_err();
        assert_eq!(err.body["details"][0]["path"], "/scaleBy");
    }

    #[test]
    fn put_app_creates_groups_and_ports() {
        let app =
            crate::validation::parse_app(br#"{"id":"/a/b/c","cmd":"x","ports":[0,0]}"#).unwrap();
        let root = Group::root().put_app(app, "v1").unwrap();
        assert!(root.group(&p("/a/b")).is_some());
        let c = root.app(&p("/a/b/c")).unwrap();
        assert_eq!(c.service_ports(), vec![10000, 10001]);
        // resubmitting keeps the ports
        let app =
            crate::validation::parse_app(br#"{"id":"/a/b/c","cmd":"x","ports":[0,0]}"#).unwrap();
        let again = root.put_app(app, "v2").unwrap();
        assert_eq!(
            again.app(&p("/a/b/c")).unwrap().service_ports(),
            vec![10000, 10001]
        );
        // an app where a group is
        let app = crate::validation::parse_app(br#"{"id":"/a/b","cmd":"x"}"#).unwrap();
        assert_eq!(root.put_app(app, "v2").unwrap_err().status, 422);
    }

    #[test]
    fn cycles() {
        let graph = BTreeMap::from([
            (p("/a"), BTreeSet::from([p("/b")])),
            (p("/b"), BTreeSet::from([p("/c")])),
            (p("/c"), BTreeSet::from([p("/a")])),
            (p("/d"), BTreeSet::new()),
        ]);
        assert_eq!(
            find_cycle(&graph),
            Some(vec![p("/a"), p("/b"), p("/c"), p("/a")])
        );
        let dag = BTreeMap::from([
            (p("/a"), BTreeSet::from([p("/b"), p("/c")])),
            (p("/b"), BTreeSet::from([p("/c")])),
            (p("/c"), BTreeSet::new()),
        ]);
        assert_eq!(find_cycle(&dag), None);
        let selfloop = BTreeMap::from([(p("/a"), BTreeSet::from([p("/a")]))]);
        assert!(find_cycle(&selfloop).is_some());
    }

    #[test]
    fn group_depending_on_its_parent_is_a_cycle() {
        let body = br#"{"id":"/x","dependencies":["/x/g"],"groups":[{"id":"g","apps":[{"id":"a","cmd":"c"}]}]}"#;
        let update = parse_group(body, &PathId::root()).unwrap();
        let err = Group::root()
            .apply_update(&PathId::root(), &update, UpdateMode::Create, "v")
            .unwrap_err();
        assert_eq!(err.body["details"][0]["errors"][0], CYCLIC_DEPENDENCIES);
    }
}
