//! The gRPC methods the gateway serves, known by path, so that metrics labels stay bounded and
//! auth knows which calls are exempt.

/// What the gateway knows of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The fully qualified service, e.g. `codepipeline.jobworker.v1.JobWorkerService`.
    pub service: &'static str,
    /// The method, e.g. `AcknowledgeJob`.
    pub name: &'static str,
    /// `unary`, `server_stream` or `bidi_stream`, as go-grpc-prometheus labels them.
    pub kind: &'static str,
    /// Which part of the API the method belongs to.
    pub api: Api,
}

/// The parts of the served API, which auth treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The job-worker service: always authenticated.
    JobWorker,
    /// The emulator's admin service: always authenticated.
    EmulatorAdmin,
    /// grpc.health.v1: never authenticated (Kubernetes probes carry no credentials).
    Health,
    /// Server reflection: authenticated only when configured so.
    Reflection,
}

const JOB_WORKER: &str = "codepipeline.jobworker.v1.JobWorkerService";
const EMULATOR_ADMIN: &str = "codepipeline.emulator.v1.EmulatorAdminService";

const fn method(service: &'static str, name: &'static str, kind: &'static str, api: Api) -> Method {
    Method {
        service,
        name,
        kind,
        api,
    }
}

/// Every method served.
pub const METHODS: &[Method] = &[
    method(JOB_WORKER, "PollForJobs", "unary", Api::JobWorker),
    method(JOB_WORKER, "AcknowledgeJob", "unary", Api::JobWorker),
    method(JOB_WORKER, "GetJobDetails", "unary", Api::JobWorker),
    method(JOB_WORKER, "PutJobSuccessResult", "unary", Api::JobWorker),
    method(JOB_WORKER, "PutJobFailureResult", "unary", Api::JobWorker),
    method(
        EMULATOR_ADMIN,
        "RegisterActionType",
        "unary",
        Api::EmulatorAdmin,
    ),
    method(EMULATOR_ADMIN, "CreateJob", "unary", Api::EmulatorAdmin),
    method(EMULATOR_ADMIN, "GetJob", "unary", Api::EmulatorAdmin),
    method(EMULATOR_ADMIN, "ListJobs", "unary", Api::EmulatorAdmin),
    method(EMULATOR_ADMIN, "GetCallCounts", "unary", Api::EmulatorAdmin),
    method(EMULATOR_ADMIN, "SetFaults", "unary", Api::EmulatorAdmin),
    method("grpc.health.v1.Health", "Check", "unary", Api::Health),
    method(
        "grpc.health.v1.Health",
        "Watch",
        "server_stream",
        Api::Health,
    ),
    method("grpc.health.v1.Health", "List", "unary", Api::Health),
    method(
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
        Api::Reflection,
    ),
    method(
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
        Api::Reflection,
    ),
];

/// The served method a request is for, resolved once by the outermost layer and kept in the
/// request's extensions for the layers below.
#[derive(Debug, Clone, Copy)]
pub struct Resolved(pub Option<&'static Method>);

/// The method a request is for: as the outermost layer resolved it, or looked up now.
pub fn of<B>(request: &http::Request<B>) -> Option<&'static Method> {
    match request.extensions().get::<Resolved>() {
        Some(Resolved(method)) => *method,
        None => lookup(request.uri().path()),
    }
}

/// The method at this request path (`/service/method`), if the gateway serves it.
pub fn lookup(path: &str) -> Option<&'static Method> {
    index_of(path).map(|index| &METHODS[index])
}

/// The index in [`METHODS`] of the method at this request path, if the gateway serves it.
pub fn index_of(path: &str) -> Option<usize> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .position(|method| method.name == name && method.service == service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_paths_are_found_and_others_are_not() {
        let ack = lookup("/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob").unwrap();
        assert_eq!((ack.name, ack.api), ("AcknowledgeJob", Api::JobWorker));
        assert_eq!(
            lookup("/grpc.health.v1.Health/Check").unwrap().api,
            Api::Health
        );
        for unknown in [
            "",
            "/",
            "/x/y",
            "/codepipeline.jobworker.v1.JobWorkerService/Nope",
            "no-slash",
        ] {
            assert!(lookup(unknown).is_none(), "{unknown}");
        }
    }
}
