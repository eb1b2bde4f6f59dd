//! The served RPCs: the closed set of methods the gateway answers, known by path, so that metrics
//! labels stay bounded, auth knows which calls are exempt, and every per-method table is keyed by
//! a [`Method`] rather than by a position or a string.

use enum_map::Enum;

use crate::{
    pb,
    upstream::{Family, Operation},
};

/// Every RPC the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
pub enum Method {
    /// An upstream operation's RPC, named as the operation: `JobWorkerService/<Operation>` or,
    /// for the third-party ones, `ThirdPartyJobWorkerService/<Operation>`.
    Upstream(Operation),
    /// `JobWorkerService/StreamJobs`.
    StreamJobs,
    /// `ArtifactService/DownloadInputArtifact`.
    DownloadInputArtifact,
    /// `ArtifactService/UploadOutputArtifact`.
    UploadOutputArtifact,
    /// `EmulatorAdminService/RegisterActionType`.
    RegisterActionType,
    /// `EmulatorAdminService/CreateJob`.
    CreateJob,
    /// `EmulatorAdminService/GetJob`.
    GetJob,
    /// `EmulatorAdminService/ListJobs`.
    ListJobs,
    /// `EmulatorAdminService/GetCallCounts`.
    GetCallCounts,
    /// `EmulatorAdminService/SetFaults`.
    SetFaults,
    /// `EmulatorAdminService/AttachInputArtifact`.
    AttachInputArtifact,
    /// `EmulatorAdminService/ReadOutputArtifact`.
    ReadOutputArtifact,
    /// `grpc.health.v1.Health/Check`.
    HealthCheck,
    /// `grpc.health.v1.Health/Watch`.
    HealthWatch,
    /// `grpc.health.v1.Health/List`.
    HealthList,
    /// `grpc.reflection.v1.ServerReflection/ServerReflectionInfo`.
    ReflectionV1,
    /// `grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo`.
    ReflectionV1Alpha,
}

/// How the messages of a call flow, as go-grpc-prometheus labels it (`grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl RpcKind {
    /// The `grpc_type` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ServerStream => "server_stream",
            Self::ClientStream => "client_stream",
            Self::BidiStream => "bidi_stream",
        }
    }
}

/// The parts of the served API, which auth and the limits treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The job-worker services (custom, third-party, artifacts): always authenticated,
    /// rate-limited.
    JobWorker,
    /// The emulator's admin service: always authenticated, never rate-limited.
    EmulatorAdmin,
    /// grpc.health.v1: never authenticated (Kubernetes probes carry no credentials), never shed.
    Health,
    /// Server reflection: authenticated only when configured so.
    Reflection,
}

const JOB_WORKER: &str = pb::jobworker::job_worker_service_server::SERVICE_NAME;
const THIRD_PARTY_JOB_WORKER: &str =
    pb::jobworker::third_party_job_worker_service_server::SERVICE_NAME;
const ARTIFACT: &str = pb::jobworker::artifact_service_server::SERVICE_NAME;
/// Named even in a build without the emulator: a token file may list its methods.
const EMULATOR_ADMIN: &str = "codepipeline.emulator.v1.EmulatorAdminService";
const HEALTH: &str = tonic_health::pb::health_server::SERVICE_NAME;
const REFLECTION_V1: &str = tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME;
const REFLECTION_V1ALPHA: &str =
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME;

impl Method {
    /// Every method, for iteration; per-method state lives in an [`enum_map::EnumMap`].
    pub const ALL: [Self; <Self as Enum>::LENGTH] = Self::all();

    /// The methods of [`Self::ALL`]: the operations' first, in the table's order.
    const fn all() -> [Self; <Self as Enum>::LENGTH] {
        let mut all = [Self::StreamJobs; <Self as Enum>::LENGTH];
        let mut at = 0;
        while at < Operation::ALL.len() {
            all[at] = Self::Upstream(Operation::ALL[at]);
            at += 1;
        }
        let others = [
            Self::StreamJobs,
            Self::DownloadInputArtifact,
            Self::UploadOutputArtifact,
            Self::RegisterActionType,
            Self::CreateJob,
            Self::GetJob,
            Self::ListJobs,
            Self::GetCallCounts,
            Self::SetFaults,
            Self::AttachInputArtifact,
            Self::ReadOutputArtifact,
            Self::HealthCheck,
            Self::HealthWatch,
            Self::HealthList,
            Self::ReflectionV1,
            Self::ReflectionV1Alpha,
        ];
        let mut other = 0;
        while other < others.len() {
            all[at + other] = others[other];
            other += 1;
        }
        all
    }

    /// Which part of the API the method belongs to.
    pub const fn api(self) -> Api {
        match self {
            Self::Upstream(_)
            | Self::StreamJobs
            | Self::DownloadInputArtifact
            | Self::UploadOutputArtifact => Api::JobWorker,
            Self::RegisterActionType
            | Self::CreateJob
            | Self::GetJob
            | Self::ListJobs
            | Self::GetCallCounts
            | Self::SetFaults
            | Self::AttachInputArtifact
            | Self::ReadOutputArtifact => Api::EmulatorAdmin,
            Self::HealthCheck | Self::HealthWatch | Self::HealthList => Api::Health,
            Self::ReflectionV1 | Self::ReflectionV1Alpha => Api::Reflection,
        }
    }

    /// The fully qualified service, as the generated code names it.
    pub const fn service(self) -> &'static str {
        match (self.api(), self) {
            (_, Self::Upstream(operation)) => match operation.family() {
                Family::Custom => JOB_WORKER,
                Family::ThirdParty => THIRD_PARTY_JOB_WORKER,
            },
            (Api::JobWorker, Self::DownloadInputArtifact | Self::UploadOutputArtifact) => ARTIFACT,
            (Api::JobWorker, _) => JOB_WORKER,
            (Api::EmulatorAdmin, _) => EMULATOR_ADMIN,
            (Api::Health, _) => HEALTH,
            (Api::Reflection, Self::ReflectionV1) => REFLECTION_V1,
            (Api::Reflection, _) => REFLECTION_V1ALPHA,
        }
    }

    /// The method's name within its service.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Upstream(operation) => operation.as_str(),
            Self::StreamJobs => "StreamJobs",
            Self::DownloadInputArtifact => "DownloadInputArtifact",
            Self::UploadOutputArtifact => "UploadOutputArtifact",
            Self::RegisterActionType => "RegisterActionType",
            Self::CreateJob => "CreateJob",
            Self::GetJob => "GetJob",
            Self::ListJobs => "ListJobs",
            Self::GetCallCounts => "GetCallCounts",
            Self::SetFaults => "SetFaults",
            Self::AttachInputArtifact => "AttachInputArtifact",
            Self::ReadOutputArtifact => "ReadOutputArtifact",
            Self::HealthCheck => "Check",
            Self::HealthWatch => "Watch",
            Self::HealthList => "List",
            Self::ReflectionV1 | Self::ReflectionV1Alpha => "ServerReflectionInfo",
        }
    }

    /// How its messages flow.
    pub const fn kind(self) -> RpcKind {
        match self {
            Self::HealthWatch | Self::DownloadInputArtifact | Self::ReadOutputArtifact => {
                RpcKind::ServerStream
            }
            Self::UploadOutputArtifact | Self::AttachInputArtifact => RpcKind::ClientStream,
            Self::StreamJobs | Self::ReflectionV1 | Self::ReflectionV1Alpha => RpcKind::BidiStream,
            _ => RpcKind::Unary,
        }
    }

    /// The method at this request path (`/service/method`), if the gateway serves it.
    pub fn from_path(path: &str) -> Option<Self> {
        let (service, name) = path.strip_prefix('/')?.split_once('/')?;
        Self::ALL
            .into_iter()
            .find(|method| method.name() == name && method.service() == service)
    }

    /// Whether `entry` of a token file's `allowed_rpcs` names this method: by name
    /// (`AcknowledgeJob`), by full name (`codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob`),
    /// or as `*`.
    pub fn is_named_by(self, entry: &str) -> bool {
        entry == "*"
            || entry == self.name()
            || entry
                .strip_prefix(self.service())
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(self.name())
    }
}

/// The served method a request is for, resolved once by the outermost layer and kept in the
/// request's extensions for the layers below; `None` for a path the gateway does not serve.
#[derive(Debug, Clone, Copy)]
pub struct Resolved(pub Option<Method>);

/// The method a request is for: as the outermost layer resolved it, or looked up now.
pub fn of<B>(request: &http::Request<B>) -> Option<Method> {
    match request.extensions().get::<Resolved>() {
        Some(Resolved(method)) => *method,
        None => Method::from_path(request.uri().path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "emulator")]
    #[test]
    fn the_admin_service_name_is_the_generated_one() {
        assert_eq!(
            EMULATOR_ADMIN,
            pb::emulator::emulator_admin_service_server::SERVICE_NAME
        );
    }

    #[test]
    fn all_lists_every_method_once() {
        assert_eq!(Method::ALL.len(), Method::LENGTH);
        let distinct: std::collections::HashSet<_> = Method::ALL.into_iter().collect();
        assert_eq!(
            distinct.len(),
            Method::LENGTH,
            "a method is listed twice, another never"
        );
        for method in Method::ALL {
            let path = format!("/{}/{}", method.service(), method.name());
            assert_eq!(Method::from_path(&path), Some(method), "{path}");
        }
    }

    #[test]
    fn served_paths_are_found_and_others_are_not() {
        let ack = Method::from_path("/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob")
            .unwrap();
        assert_eq!(
            (ack, ack.api()),
            (Method::Upstream(Operation::AcknowledgeJob), Api::JobWorker)
        );
        assert_eq!(
            Method::from_path("/grpc.health.v1.Health/Check").map(Method::api),
            Some(Api::Health)
        );
        for unknown in [
            "",
            "/",
            "/x/y",
            "/codepipeline.jobworker.v1.JobWorkerService/Nope",
            "no-slash",
        ] {
            assert!(Method::from_path(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn allowed_rpcs_entries_name_a_method_by_name_full_name_or_star() {
        let ack = Method::Upstream(Operation::AcknowledgeJob);
        assert!(ack.is_named_by("AcknowledgeJob"));
        assert!(ack.is_named_by("codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob"));
        assert!(ack.is_named_by("*"));
        assert!(!ack.is_named_by("PollForJobs"));
        assert!(!ack.is_named_by("codepipeline.jobworker.v1.JobWorkerService/PollForJobs"));
        assert!(!ack.is_named_by("codepipeline.jobworker.v1.JobWorkerServiceAcknowledgeJob"));
    }
}
