//! The Kubernetes authorizer library (upstream `library/authz.go`): the `authorizer` variable
//! of admission policies asks the cluster's authorizer what the requesting user (or a service
//! account) may do.
//!
//! ```text
//! authorizer.group('apps').resource('deployments').namespace('x').name('y').check('create').allowed()
//! authorizer.path('/healthz').check('get').reason()
//! authorizer.serviceAccount('ns', 'sa').group('').resource('pods').check('list').errored()
//! authorizer.requestResource.check('update')
//! ```
//!
//! The checks are built as values; only `check(verb)` asks the [`Authorizer`] the caller put
//! into the [`super::Activation`], through a thread-local set for the one evaluation.

use std::cell::RefCell;
use std::sync::Arc;

use cel_interpreter::{ExecutionError, FunctionContext, Value};

use super::opaque;

const AUTHORIZER: &str = "kubernetes.authorization.Authorizer";
const PATH_CHECK: &str = "kubernetes.authorization.PathCheck";
const GROUP_CHECK: &str = "kubernetes.authorization.GroupCheck";
const RESOURCE_CHECK: &str = "kubernetes.authorization.ResourceCheck";
const DECISION: &str = "kubernetes.authorization.Decision";

/// Who is asking, as the authorizer sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// One question for the authorizer: a non-resource `path`, or a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    pub subject: Subject,
    pub verb: String,
    pub path: Option<String>,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    /// Set when the authorizer could not decide.
    pub error: Option<String>,
}

/// The cluster's authorizer, as CEL's `check()` reaches it.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, check: &Check) -> Decision;
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<dyn Authorizer>>> = const { RefCell::new(None) };
}

/// Makes `authorizer` the one `check()` asks during the evaluation that `during` runs.
pub fn with_authorizer<T>(
    authorizer: Option<Arc<dyn Authorizer>>,
    during: impl FnOnce() -> T,
) -> T {
    let previous = CURRENT.with(|c| c.replace(authorizer));
    let result = during();
    CURRENT.with(|c| c.replace(previous));
    result
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn subject_fields(subject: &Subject) -> [(&'static str, Value); 3] {
    let groups = subject.groups.iter().map(|g| string(g)).collect();
    [
        ("user", string(&subject.user)),
        ("uid", string(&subject.uid)),
        ("groups", Value::List(Arc::new(groups))),
    ]
}

/// The `authorizer` variable for `subject`, with `requestResource` the resource of the request
/// (`None` outside admission).
pub fn authorizer_value(subject: &Subject, request: Option<&Check>) -> Value {
    let mut fields: Vec<(&str, Value)> = subject_fields(subject).into_iter().collect();
    if let Some(request) = request {
        let check = opaque::object(
            RESOURCE_CHECK,
            subject_fields(subject).into_iter().chain([
                ("group", string(&request.group)),
                ("version", string(&request.version)),
                ("resource", string(&request.resource)),
                ("subresource", string(&request.subresource)),
                ("namespace", string(&request.namespace)),
                ("name", string(&request.name)),
            ]),
        );
        fields.push(("requestResource", check));
    }
    opaque::object(AUTHORIZER, fields)
}

/// The receiver if it is of `type_name`, and the string arguments.
fn parts(
    ftx: &FunctionContext,
    type_name: &str,
    strings: usize,
) -> Result<(Value, Vec<Arc<String>>), ExecutionError> {
    let this = ftx
        .this
        .clone()
        .filter(|t| opaque::type_of(t) == Some(type_name))
        .ok_or_else(|| {
            ftx.error(format!(
                "no such overload: {} needs a receiver of type {type_name}",
                ftx.name
            ))
        })?;
    if ftx.args.len() != strings {
        return Err(ftx.error(format!("{} takes {strings} argument(s)", ftx.name)));
    }
    let mut out = Vec::with_capacity(strings);
    for arg in &ftx.args {
        match ftx.resolve(arg.clone())? {
            Value::String(s) => out.push(s),
            _ => return Err(ftx.error(format!("{} needs string arguments", ftx.name))),
        }
    }
    Ok((this, out))
}

fn subject_of(value: &Value, type_name: &str) -> Subject {
    let groups = match opaque::field(value, type_name, "groups") {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|g| match g {
                Value::String(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Subject {
        user: opaque::string_field(value, type_name, "user"),
        uid: opaque::string_field(value, type_name, "uid"),
        groups,
    }
}

/// `authorizer.path(path)`
pub fn path(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (this, args) = parts(ftx, AUTHORIZER, 1)?;
    let subject = subject_of(&this, AUTHORIZER);
    Ok(opaque::object(
        PATH_CHECK,
        subject_fields(&subject)
            .into_iter()
            .chain([("path", Value::String(args[0].clone()))]),
    ))
}

/// `authorizer.group(group)`
pub fn group(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (this, args) = parts(ftx, AUTHORIZER, 1)?;
    let subject = subject_of(&this, AUTHORIZER);
    Ok(opaque::object(
        GROUP_CHECK,
        subject_fields(&subject)
            .into_iter()
            .chain([("group", Value::String(args[0].clone()))]),
    ))
}

/// `authorizer.serviceAccount(namespace, name)`: an authorizer for that service account, with
/// the groups its tokens carry.
pub fn service_account(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (_, args) = parts(ftx, AUTHORIZER, 2)?;
    let (namespace, name) = (args[0].as_str(), args[1].as_str());
    let subject = Subject {
        user: format!("system:serviceaccount:{namespace}:{name}"),
        uid: String::new(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
        ],
    };
    Ok(authorizer_value(&subject, None))
}

/// `groupCheck.resource(resource)`
pub fn resource(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (this, args) = parts(ftx, GROUP_CHECK, 1)?;
    let subject = subject_of(&this, GROUP_CHECK);
    let group = opaque::string_field(&this, GROUP_CHECK, "group");
    Ok(opaque::object(
        RESOURCE_CHECK,
        subject_fields(&subject).into_iter().chain([
            ("group", string(&group)),
            ("version", string("*")),
            ("resource", Value::String(args[0].clone())),
            ("subresource", string("")),
            ("namespace", string("")),
            ("name", string("")),
        ]),
    ))
}

fn set_resource_field(ftx: &FunctionContext, field: &str) -> Result<Value, ExecutionError> {
    let (this, args) = parts(ftx, RESOURCE_CHECK, 1)?;
    Ok(opaque::with(
        &this,
        [(field, Value::String(args[0].clone()))],
    ))
}

/// `resourceCheck.subresource(s)`
pub fn subresource(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    set_resource_field(ftx, "subresource")
}

/// `resourceCheck.namespace(ns)`
pub fn namespace(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    set_resource_field(ftx, "namespace")
}

/// `resourceCheck.name(name)`
pub fn name(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    set_resource_field(ftx, "name")
}

/// `pathCheck.check(verb)` or `resourceCheck.check(verb)`: asks the authorizer.
pub fn check(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let type_name = match ftx.this.as_ref().and_then(opaque::type_of) {
        Some(PATH_CHECK) => PATH_CHECK,
        _ => RESOURCE_CHECK,
    };
    let (this, args) = parts(ftx, type_name, 1)?;
    let field = |name: &str| opaque::string_field(&this, type_name, name);
    let question = Check {
        subject: subject_of(&this, type_name),
        verb: args[0].to_string(),
        path: (type_name == PATH_CHECK).then(|| field("path")),
        group: field("group"),
        version: field("version"),
        resource: field("resource"),
        subresource: field("subresource"),
        namespace: field("namespace"),
        name: field("name"),
    };
    let decision = CURRENT.with(|c| match c.borrow().as_ref() {
        Some(authorizer) => authorizer.authorize(&question),
        None => Decision {
            allowed: false,
            reason: String::new(),
            error: Some("no authorizer is available".into()),
        },
    });
    Ok(opaque::object(
        DECISION,
        [
            ("allowed", Value::Bool(decision.allowed)),
            ("reason", string(&decision.reason)),
            ("errored", Value::Bool(decision.error.is_some())),
            ("error", string(decision.error.as_deref().unwrap_or(""))),
        ],
    ))
}

fn decision_field(ftx: &FunctionContext, field: &str) -> Result<Value, ExecutionError> {
    let (this, _) = parts(ftx, DECISION, 0)?;
    opaque::field(&this, DECISION, field)
        .cloned()
        .ok_or_else(|| ftx.error(format!("the decision has no {field}")))
}

/// `decision.allowed()`
pub fn allowed(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    decision_field(ftx, "allowed")
}

/// `decision.reason()`
pub fn reason(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    decision_field(ftx, "reason")
}

/// `decision.errored()`
pub fn errored(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    decision_field(ftx, "errored")
}

/// `decision.error()`
pub fn error(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    decision_field(ftx, "error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::{compile, Activation};
    use std::sync::Mutex;

    /// Allows alice to create deployments in `x` and everyone to get `/healthz`; records the
    /// questions it was asked.
    #[derive(Default)]
    struct Recorder {
        asked: Mutex<Vec<Check>>,
    }

    impl Authorizer for Recorder {
        fn authorize(&self, check: &Check) -> Decision {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(check.clone());
            }
            let allowed = match &check.path {
                Some(path) => path == "/healthz" && check.verb == "get",
                None => {
                    check.subject.user == "alice"
                        && check.group == "apps"
                        && check.resource == "deployments"
                        && check.namespace == "x"
                        && check.verb == "create"
                }
            };
            Decision {
                allowed,
                reason: if allowed {
                    "granted".into()
                } else {
                    String::new()
                },
                error: (check.resource == "broken").then(|| "the authorizer failed".into()),
            }
        }
    }

    fn eval(recorder: &Arc<Recorder>, source: &str) -> Value {
        let alice = Subject {
            user: "alice".into(),
            uid: "1".into(),
            groups: vec!["system:authenticated".into()],
        };
        let request = Check {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
            namespace: "x".into(),
            name: "web".into(),
            ..Check::default()
        };
        let mut activation = Activation::new();
        activation.bind_authorizer(&alice, Some(&request), recorder.clone());
        compile(source)
            .expect("compiles")
            .eval(&activation)
            .expect("evaluates")
    }

    #[test]
    fn checks_ask_the_authorizer_about_the_requesting_user() {
        let recorder = Arc::new(Recorder::default());
        let yes = |s: &str| assert_eq!(eval(&recorder, s), Value::Bool(true), "{s}");
        yes("authorizer.group('apps').resource('deployments').namespace('x').name('y').check('create').allowed()");
        yes("authorizer.group('apps').resource('deployments').namespace('x').check('create').reason() == 'granted'");
        yes("!authorizer.group('apps').resource('deployments').namespace('other').check('create').allowed()");
        yes("!authorizer.group('').resource('pods').check('create').errored()");
        yes("authorizer.group('').resource('broken').check('get').errored()");
        yes("authorizer.group('').resource('broken').check('get').error() == 'the authorizer failed'");
        yes("authorizer.path('/healthz').check('get').allowed()");
        yes("!authorizer.path('/metrics').check('get').allowed()");
        yes("authorizer.requestResource.check('create').allowed()");
        yes("!authorizer.requestResource.check('delete').allowed()");
        yes("!authorizer.serviceAccount('default', 'builder').group('apps').resource('deployments').namespace('x').check('create').allowed()");
        let asked = recorder.asked.lock().expect("lock").clone();
        assert_eq!(asked[0].subject.user, "alice");
        assert_eq!(asked[0].subject.groups, ["system:authenticated"]);
        assert_eq!(
            (
                asked[0].namespace.as_str(),
                asked[0].name.as_str(),
                asked[0].verb.as_str()
            ),
            ("x", "y", "create")
        );
        assert_eq!(asked[6].path.as_deref(), Some("/healthz"));
        assert_eq!(asked[8].name, "web");
        assert_eq!(asked[8].version, "v1");
        let service_account = &asked[10].subject;
        assert_eq!(
            service_account.user,
            "system:serviceaccount:default:builder"
        );
        assert_eq!(
            service_account.groups,
            ["system:serviceaccounts", "system:serviceaccounts:default"]
        );
    }

    #[test]
    fn a_check_without_an_authorizer_is_an_errored_decision() {
        let mut activation = Activation::new();
        activation.bind("authorizer", authorizer_value(&Subject::default(), None));
        let program = compile("authorizer.path('/x').check('get').errored()").expect("compiles");
        assert_eq!(program.eval(&activation), Ok(Value::Bool(true)));
        let err = compile("'x'.check('get')")
            .expect("compiles")
            .eval(&activation)
            .unwrap_err();
        assert!(err.to_string().contains("no such overload"), "{err}");
    }
}
