//! The agent's `/state` in Mesos' shape (the parts tools read): id, hostname, resources as a
//! name → value map, attributes, the master's host name, and the frameworks with their executors
//! and tasks (one command executor per task, named after it, with its sandbox as `directory`),
//! running and completed.

use std::collections::BTreeMap;
use std::path::Path;

use drover_core::resources::Value;
use drover_core::task::TaskState;
use drover_core::Resources;
use serde_json::{json, Map, Value as Json};

/// Resources as Mesos' `/state` shows them: scalars as numbers (summed over roles), ranges as
/// `[a-b, c-d]`, sets as `{a,b}`.
pub fn resources_json(resources: &Resources) -> Json {
    let mut scalars: BTreeMap<&str, f64> = BTreeMap::new();
    let mut out = Map::new();
    for (name, _role, value) in resources.iter() {
        match value {
            Value::Scalar(s) => *scalars.entry(name).or_default() += s.as_f64(),
            Value::Ranges(r) => {
                let items: Vec<String> = r.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                out.insert(name.to_string(), json!(format!("[{}]", items.join(", "))));
            }
            Value::Set(items) => {
                let items: Vec<&str> = items.iter().map(String::as_str).collect();
                out.insert(name.to_string(), json!(format!("{{{}}}", items.join(","))));
            }
        }
    }
    for (name, value) in scalars {
        out.insert(name.to_string(), json!(value));
    }
    Json::Object(out)
}

/// One task as `/state` lists it.
pub struct TaskView<'a> {
    pub task_id: &'a str,
    pub framework_id: &'a str,
    pub framework: &'a Json,
    pub task: &'a Json,
    pub state: TaskState,
    /// Its sandbox, when it has one (live).
    pub directory: Option<&'a Path>,
}

pub fn task_json(view: &TaskView<'_>, agent_id: &str) -> Json {
    let resources = view
        .task
        .get("resources")
        .and_then(|r| serde_json::from_value::<Vec<drover_core::v1::Resource>>(r.clone()).ok())
        .and_then(|r| drover_core::v1::from_mesos(&r).ok())
        .unwrap_or_default();
    json!({
        "id": view.task_id,
        "name": view.task.get("name").cloned().unwrap_or(json!("")),
        "framework_id": view.framework_id,
        "executor_id": "",
        "slave_id": agent_id,
        "state": view.state,
        "resources": resources_json(&resources),
    })
}

/// Groups tasks by framework as Mesos does: each task is its own executor's; an ended task sits
/// in `completed_executors`.
pub fn frameworks_json<'a>(tasks: impl IntoIterator<Item = TaskView<'a>>, agent_id: &str) -> Json {
    let mut frameworks: BTreeMap<&str, (Json, Vec<Json>, Vec<Json>)> = BTreeMap::new();
    for view in tasks {
        let entry = frameworks
            .entry(view.framework_id)
            .or_insert_with(|| (view.framework.clone(), Vec::new(), Vec::new()));
        let task = task_json(&view, agent_id);
        let ended = view.state.is_terminal();
        let mut executor = json!({
            "id": view.task_id,
            "name": format!("Command Executor (Task: {})", view.task_id),
            "source": view.task_id,
            "framework_id": view.framework_id,
            "tasks": if ended { json!([]) } else { json!([task.clone()]) },
            "queued_tasks": [],
            "completed_tasks": if ended { json!([task]) } else { json!([]) },
        });
        // Where a UI browses the task's files (`/files/browse?path=`).
        if let Some(directory) = view.directory {
            executor["directory"] = json!(directory.to_string_lossy());
        }
        if ended {
            entry.2.push(executor);
        } else {
            entry.1.push(executor);
        }
    }
    let list: Vec<Json> = frameworks
        .into_iter()
        .map(|(id, (info, executors, completed))| {
            json!({
                "id": id,
                "name": info.get("name").cloned().unwrap_or(json!("")),
                "user": info.get("user").cloned().unwrap_or(json!("")),
                "role": info.get("role").cloned().unwrap_or(json!("*")),
                "executors": executors,
                "completed_executors": completed,
            })
        })
        .collect();
    Json::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_frameworks_in_mesos_shape() {
        let resources: Resources = "cpus:4;mem:8192;ports:[31000-31005,31010-31020]"
            .parse()
            .unwrap();
        assert_eq!(
            resources_json(&resources),
            json!({"cpus": 4.0, "mem": 8192.0, "ports": "[31000-31005, 31010-31020]"})
        );
        let framework = json!({"name": "marathon", "user": "root"});
        let running = json!({"name": "web", "task_id": {"value": "t1"}, "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]});
        let done = json!({"name": "job", "task_id": {"value": "t2"}});
        let views = vec![
            TaskView {
                task_id: "t1",
                framework_id: "f1",
                framework: &framework,
                task: &running,
                state: TaskState::TaskRunning,
                directory: Some(Path::new("/work/sandboxes/t1")),
            },
            TaskView {
                task_id: "t2",
                framework_id: "f1",
                framework: &framework,
                task: &done,
                state: TaskState::TaskFinished,
                directory: None,
            },
        ];
        let json = frameworks_json(views, "a1");
        assert_eq!(json[0]["name"], "marathon");
        let task = &json[0]["executors"][0]["tasks"][0];
        assert_eq!(task["id"], "t1");
        assert_eq!(task["state"], "TASK_RUNNING");
        assert_eq!(task["resources"], json!({"cpus": 0.5}));
        assert_eq!(task["slave_id"], "a1");
        assert_eq!(json[0]["executors"][0]["directory"], "/work/sandboxes/t1");
        // A simulated task has no sandbox, and its executor says none.
        assert!(json[0]["completed_executors"][0].get("directory").is_none());
        assert_eq!(
            json[0]["completed_executors"][0]["completed_tasks"][0]["state"],
            "TASK_FINISHED"
        );
    }
}
