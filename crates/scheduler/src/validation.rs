//! Request bodies in, Marathon's error bodies out.
//!
//! Three kinds of failure, each in Marathon's own form:
//!
//! | what | status | body |
//! |---|---|---|
//! | not JSON at all | 400 | `{"message":"Invalid JSON","details":"<parser message>"}` |
//! | JSON of the wrong type somewhere (`"cpus": ".25"`) | 422 | `{"message":"Invalid JSON","details":[{"path":"/cpus","errors":["error.expected.jsnumber"]}]}` |
//! | well-typed but breaking a rule | 422 | `{"message":"Object is not valid","details":[{"path":"/id","errors":["must fully match regular expression '...'"]}]}` |
//!
//! The first two are what Marathon 1.5+ answers (its Jackson parser's `JsonParseException` and
//! its Play readers' `JsResultException`); type errors are all reported at once with Play's
//! message keys (`error.expected.jsnumber`, `error.expected.jsstring`, `error.expected.int`,
//! `error.path.missing`, `error.unknown.enum.literal`, ...). When a document has type errors its
//! rules are not checked (Marathon reads, then validates).
//!
//! Paths are written as Marathon writes them: `/` for the document itself, `/key` for a field,
//! `(i)` for an array element: `/cpus`, `/container/docker/image`, `/apps(0)/cpus`,
//! `/groups(1)/apps(0)/id`, `/constraints(0)`, `/healthChecks(0)`.
//!
//! Rule messages are Marathon's where it has one (Accord's `got 0.0, expected 0.001 or more`,
//! `got 1.2, expected between 0.0 and 1.0`, `AppDefinition must either contain one of 'cmd' or
//! 'args', and/or a 'container'.`, the PathId regular expression, the constraint messages,
//! `Dependency graph has cyclic dependencies.`). Details are grouped by path in the order they
//! were found, each path's messages without duplicates, so the body is deterministic.

use std::fmt;

use serde_json::{json, Value};

use crate::app::{decode_app, AppDefinition, ContainerType};
use crate::decode::{index_path, Ctx};
use crate::path::PathId;

/// Marathon's message for apps without anything to run.
pub const CMD_ARGS_OR_CONTAINER: &str =
    "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";
/// Marathon's message for a dependency cycle.
pub const CYCLIC_DEPENDENCIES: &str = "Dependency graph has cyclic dependencies.";
/// Marathon's message for a health check port index out of range.
pub const HEALTH_PORT_INDEX: &str =
    "Health check port indices must address an element of the ports array or container port mappings.";

/// Largest request body read; a larger one is refused with 413 before parsing (a drover bound).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// An HTTP error in Marathon's form: a status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

/// One rule broken at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl ApiError {
    /// 400: the body is not JSON.
    pub fn invalid_json(detail: impl fmt::Display) -> ApiError {
        ApiError {
            status: 400,
            body: json!({"message": "Invalid JSON", "details": detail.to_string()}),
        }
    }

    /// 422: JSON of the wrong type; `errors` are (path, Play message key).
    pub fn json_type_errors(errors: &[(String, String)]) -> ApiError {
        ApiError {
            status: 422,
            body: json!({"message": "Invalid JSON", "details": details(errors)}),
        }
    }

    /// 422: rules broken; `violations` are (path, message).
    pub fn not_valid(violations: &[(String, String)]) -> ApiError {
        ApiError {
            status: 422,
            body: json!({"message": "Object is not valid", "details": details(violations)}),
        }
    }

    /// 422 with a plain message (Marathon's `IllegalArgumentException` mapping).
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 422,
            body: json!({"message": message.into()}),
        }
    }

    /// 409 with a plain message.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 409,
            body: json!({"message": message.into()}),
        }
    }

    /// 404 with a plain message.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            body: json!({"message": message.into()}),
        }
    }

    /// The top-level `message`.
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The (path, message) pairs of the details, flattened.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for d in self
            .body
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = d
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for e in d
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = e.as_str().unwrap_or("").to_string();
                out.push(Violation {
                    path: path.clone(),
                    message,
                });
            }
        }
        out
    }

    /// The body as bytes, ready to send with `Content-Type: application/json`.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for ApiError {}

/// Groups (path, message) pairs by path, in first-seen order, without repeated messages.
fn details(pairs: &[(String, String)]) -> Value {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (path, message) in pairs {
        match grouped.iter_mut().find(|(p, _)| p == path) {
            Some((_, messages)) => {
                if !messages.contains(&message.as_str()) {
                    messages.push(message);
                }
            }
            None => grouped.push((path, vec![message])),
        }
    }
    Value::Array(
        grouped
            .into_iter()
            .map(|(path, errors)| json!({"path": path, "errors": errors}))
            .collect(),
    )
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError {
            status: 413,
            body: json!({"message": format!("Request body larger than {MAX_BODY_BYTES} bytes")}),
        });
    }
    serde_json::from_slice(body).map_err(ApiError::invalid_json)
}

pub(crate) fn finish<T>(value: Option<T>, ctx: Ctx) -> Result<T, ApiError> {
    if !ctx.json.is_empty() {
        return Err(ApiError::json_type_errors(&ctx.json));
    }
    if !ctx.violations.is_empty() {
        return Err(ApiError::not_valid(&ctx.violations));
    }
    value.ok_or_else(|| {
        ApiError::json_type_errors(&[("/".into(), "error.expected.jsobject".into())])
    })
}

/// Reads an app body (`POST /v2/apps`): relative ids are resolved against `/`.
pub fn parse_app(body: &[u8]) -> Result<AppDefinition, ApiError> {
    app_from_value(&parse_json(body)?, &PathId::root())
}

impl AppDefinition {
    /// Reads what [`AppDefinition::to_storage_json`] wrote (validated like a request). Here, not
    /// in `app.rs`, so that definitions do not depend on their validation.
    pub fn from_storage_json(value: &Value) -> Result<AppDefinition, ApiError> {
        app_from_value(value, &PathId::root())
    }
}

/// Reads an app from JSON already parsed, ids relative to `base`.
pub fn app_from_value(value: &Value, base: &PathId) -> Result<AppDefinition, ApiError> {
    let mut ctx = Ctx::default();
    let app = decode_app(value, "", base, false, &mut ctx);
    if let (Some(app), true) = (&app, ctx.json.is_empty()) {
        check_app(app, "", &mut ctx);
    }
    finish(app, ctx)
}

/// `PUT /v2/apps/{id}` (Marathon's default partial update): the fields of `body` replace those
/// of `existing` (absent fields are kept), and the result is read and checked as a whole. The
/// app's id is `id` whatever the body says (Marathon refuses a different one; so does this).
/// With no `existing` app, the body is a whole new app with this id.
pub fn apply_app_update(
    existing: Option<&AppDefinition>,
    id: &PathId,
    body: &[u8],
) -> Result<AppDefinition, ApiError> {
    let patch = parse_json(body)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::json_type_errors(&[(
            "/".into(),
            "error.expected.jsobject".into(),
        )]));
    };
    if let Some(given) = patch.get("id").and_then(Value::as_str) {
        if PathId::parse(given).resolve(&PathId::root()) != *id {
            return Err(ApiError::not_valid(&[(
                "/id".into(),
                format!("The id in the body ({given}) does not match the URL ({id})"),
            )]));
        }
    }
    let mut merged = match existing {
        Some(app) => match app.to_storage_json() {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        None => serde_json::Map::new(),
    };
    if existing.is_some() {
        // `uris` and `fetch` are one thing; `ports` and `portDefinitions` too: a patch of either
        // replaces both.
        for (a, b) in [("uris", "fetch"), ("ports", "portDefinitions")] {
            if patch.contains_key(a) || patch.contains_key(b) {
                merged.remove(a);
                merged.remove(b);
            }
        }
        merged.remove("version");
    }
    merged.extend(patch);
    merged.insert("id".into(), Value::String(id.to_string()));
    app_from_value(&Value::Object(merged), &PathId::root())
}

/// The rules that span several fields of an app, reported under `path`.
pub(crate) fn check_app(app: &AppDefinition, path: &str, ctx: &mut Ctx) {
    let at = |key: &str| format!("{path}/{key}");

    // Something to run.
    let cmd = app.cmd.is_some();
    let args = app.args.as_ref().is_some_and(|a| !a.is_empty());
    let container = app
        .container
        .as_ref()
        .is_some_and(|c| c.docker.is_some() || c.kind == ContainerType::Mesos);
    if !((cmd ^ args) || (!(cmd && args) && container)) {
        ctx.violation(path, CMD_ARGS_OR_CONTAINER);
    }

    // Health checks address existing ports.
    let ports = app.port_count();
    for (i, hc) in app.health_checks.iter().enumerate() {
        if hc.port_index.is_some_and(|idx| idx as usize >= ports) {
            ctx.violation(&index_path(&at("healthChecks"), i), HEALTH_PORT_INDEX);
        }
    }

    // Fixed ports are unique.
    let mut seen = Vec::new();
    for p in app
        .port_definitions
        .iter()
        .map(|p| p.port)
        .filter(|p| *p != 0)
    {
        if seen.contains(&p) {
            ctx.violation(&at("portDefinitions"), "Ports must be unique.");
            break;
        }
        seen.push(p);
    }

    if app
        .accepted_resource_roles
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        ctx.violation(&at("acceptedResourceRoles"), "must not be empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::parse_group;
    use crate::path::INVALID_SEGMENT;

    const LEGACY_WWW: &str = include_str!("../../../apps/legacy-www.json");

    #[test]
    fn legacy_www_string_cpus_is_a_422_with_the_path() {
        let err = parse_app(LEGACY_WWW.as_bytes()).unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(
            err.body,
            json!({"message": "Invalid JSON",
                   "details": [{"path": "/cpus", "errors": ["error.expected.jsnumber"]}]})
        );
    }

    #[test]
    fn legacy_www_with_numeric_cpus_still_needs_a_docker_image() {
        // The old top-level `container.image` is not Marathon 1.x's shape: a DOCKER container
        // without `docker`.
        let fixed = LEGACY_WWW.replace("\".25\"", "0.25");
        let err = parse_app(fixed.as_bytes()).unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(err.message(), "Object is not valid");
        assert_eq!(
            err.violations(),
            vec![
                Violation {
                    path: "/container/docker".into(),
                    message: "must not be empty".into()
                },
                Violation {
                    path: "/".into(),
                    message: CMD_ARGS_OR_CONTAINER.into()
                },
            ]
        );
    }

    #[test]
    fn group_type_errors_use_marathon_paths() {
        let body = br#"{"id":"/g","apps":[{"id":"a","cmd":"x","cpus":"1"}],
                        "groups":[{"id":"h","apps":[{"id":"b","cmd":"x","instances":"2"}]}]}"#;
        let err = parse_group(body, &PathId::root()).unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(
            err.body["details"],
            json!([
                {"path": "/apps(0)/cpus", "errors": ["error.expected.jsnumber"]},
                {"path": "/groups(0)/apps(0)/instances", "errors": ["error.expected.jsnumber"]},
            ])
        );
    }

    #[test]
    fn unparsable_is_400() {
        let err = parse_app(b"{\"id\": ").unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.message(), "Invalid JSON");
        assert!(err.body["details"].is_string());
        let err = parse_app(b"[1]").unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(err.body["details"][0]["path"], "/");
    }

    #[test]
    fn invalid_ids_get_marathons_regex_message() {
        for id in ["/a b", "/Upper", "/-dash", "/dash-", "/a#b", "/x_y"] {
            let body = json!({"id": id, "cmd": "x"}).to_string();
            let err = parse_app(body.as_bytes()).unwrap_err();
            assert_eq!(err.status, 422, "{id}");
            assert_eq!(
                err.violations(),
                vec![Violation {
                    path: "/id".into(),
                    message: INVALID_SEGMENT.into()
                }],
                "{id}"
            );
        }
        let deep = json!({"id": "/a".repeat(1000), "cmd": "x"}).to_string();
        let err = parse_app(deep.as_bytes()).unwrap_err();
        assert_eq!(err.violations()[0].message, crate::path::TOO_DEEP);
        let err = parse_app(br#"{"id":"/","cmd":"x"}"#).unwrap_err();
        assert_eq!(err.violations()[0].path, "/id");
        let err = parse_app(br#"{"cmd":"x"}"#).unwrap_err();
        assert_eq!(
            err.body["details"],
            json!([{"path": "/id", "errors": ["error.path.missing"]}])
        );
        let err = parse_group(
            br#"{"id":"/ok","apps":[{"id":"Bad","cmd":"x"}]}"#,
            &PathId::root(),
        )
        .unwrap_err();
        assert_eq!(err.violations()[0].path, "/apps(0)/id");
        assert_eq!(err.violations()[0].message, INVALID_SEGMENT);
    }

    #[test]
    fn rule_messages() {
        let check = |body: Value| {
            parse_app(body.to_string().as_bytes())
                .unwrap_err()
                .violations()
        };
        let v = |path: &str, message: &str| Violation {
            path: path.into(),
            message: message.into(),
        };
        assert_eq!(
            check(json!({"id": "/a"})),
            vec![v("/", CMD_ARGS_OR_CONTAINER)]
        );
        assert_eq!(
            check(json!({"id": "/a", "cmd": "x", "args": ["y"]})),
            vec![v("/", CMD_ARGS_OR_CONTAINER)]
        );
        assert_eq!(
            check(
                json!({"id": "/a", "cmd": "x", "cpus": 0, "mem": -3, "disk": -1.5, "instances": -3})
            ),
            vec![
                v("/instances", "got -3, expected 0 or more"),
                v("/cpus", "got 0.0, expected 0.001 or more"),
                v("/mem", "got -3.0, expected 0.0 or more"),
                v("/disk", "got -1.5, expected 0.0 or more"),
            ]
        );
        assert_eq!(
            check(json!({"id": "/a", "cmd": "x", "backoffFactor": 0.5,
                         "upgradeStrategy": {"minimumHealthCapacity": 1.2, "maximumOverCapacity": -0.1}})),
            vec![
                v("/backoffFactor", "got 0.5, expected 1.0 or more"),
                v(
                    "/upgradeStrategy/minimumHealthCapacity",
                    "got 1.2, expected between 0.0 and 1.0"
                ),
                v(
                    "/upgradeStrategy/maximumOverCapacity",
                    "got -0.1, expected between 0.0 and 1.0"
                ),
            ]
        );
        assert_eq!(
            check(json!({"id": "/a", "cmd": "x",
                         "constraints": [["hostname", "UNIQUE"], ["rack", "NEAR"], ["rack", "MAX_PER"]]})),
            vec![
                v("/constraints(1)", crate::constraints::OPERATOR_INVALID),
                v("/constraints(2)", crate::constraints::MAX_PER_INT),
            ]
        );
        assert_eq!(
            check(json!({"id": "/a", "cmd": "x", "portDefinitions": [],
                         "healthChecks": [{"protocol": "HTTP"}]})),
            vec![v("/healthChecks(0)", HEALTH_PORT_INDEX)]
        );
    }

    #[test]
    fn partial_update() {
        let app = parse_app(br#"{"id":"/a","cmd":"x","instances":2,"ports":[0],"zz":1}"#).unwrap();
        let id = PathId::parse("/a");
        let new = apply_app_update(Some(&app), &id, br#"{"instances": 5}"#).unwrap();
        assert_eq!(new.instances, 5);
        assert_eq!(new.cmd.as_deref(), Some("x"));
        assert_eq!(new.unknown, app.unknown);
        let new = apply_app_update(Some(&app), &id, br#"{"portDefinitions": []}"#).unwrap();
        assert!(new.port_definitions.is_empty());
        let err = apply_app_update(Some(&app), &id, br#"{"id": "/b"}"#).unwrap_err();
        assert_eq!(err.status, 422);
        let created = apply_app_update(None, &id, br#"{"cmd": "y"}"#).unwrap();
        assert_eq!(created.id, id);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(|n| json!(n)),
                (-1e6f64..1e6).prop_map(|x| json!(x)),
                "[a-zA-Z0-9/._ -]{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("id".to_string()),
                            Just("cmd".to_string()),
                            Just("cpus".to_string()),
                            Just("apps".to_string()),
                            Just("groups".to_string()),
                            Just("container".to_string()),
                            Just("docker".to_string()),
                            Just("healthChecks".to_string()),
                            Just("constraints".to_string()),
                            Just("dependencies".to_string()),
                            Just("portMappings".to_string()),
                            Just("ports".to_string()),
                            Just("instances".to_string()),
                            "[a-z]{1,6}",
                        ],
                        inner,
                        0..6,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn decoders_are_total(v in json_value()) {
                let body = v.to_string();
                if let Err(e) = parse_app(body.as_bytes()) {
                    prop_assert!(e.status == 400 || e.status == 422);
                }
                if let Ok(update) = parse_group(body.as_bytes(), &PathId::root()) {
                    let _ = crate::group::Group::root().apply_update(
                        &PathId::root(), &update, crate::group::UpdateMode::Update, "v");
                }
            }

            #[test]
            fn bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_app(&bytes);
                let _ = parse_group(&bytes, &PathId::root());
            }

            #[test]
            fn valid_apps_round_trip(instances in 0u32..100, cpus in 0.01f64..8.0, name in "[a-z][a-z0-9-]{0,6}[a-z0-9]") {
                let body = json!({"id": name, "cmd": "sleep 1", "instances": instances, "cpus": cpus});
                let app = parse_app(body.to_string().as_bytes()).unwrap();
                let back = AppDefinition::from_storage_json(&app.to_storage_json()).unwrap();
                prop_assert_eq!(back, app);
            }
        }
    }
}
