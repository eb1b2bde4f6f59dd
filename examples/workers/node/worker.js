// A CodePipeline custom-action job worker that speaks gRPC to codepipeline-gateway.
//
// Polls for jobs with as many free slots as it has, acknowledges each (dropping it when another
// worker holds it), reads its details, does the work its configuration asks for, and reports the
// result. Settings come from the environment; see README.md. SIGTERM stops polling, lets the jobs
// in hand finish, and exits 0.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtoFiles = require('google-proto-files');

const PROTO_DIR = process.env.PROTO_DIR || path.join(__dirname, '../../../proto');
// google.rpc.Status, which the job feed's answers carry, as the API imports it.
const PROTO_DEPS_DIR = process.env.PROTO_DEPS_DIR || path.join(__dirname, '../../../proto-deps');
const CALL_TIMEOUT_MS = 20_000;
const JOB_RETRY_MS = 120_000; // how long a job's call keeps retrying before the job is given up
const FIRST_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 30_000;
// Worth retrying after a pause: the gateway or CodePipeline is throttling or briefly unreachable.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED]);
// A poll failing with these is a configuration problem that waiting does not fix.
const FATAL = new Set([
  grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED, grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND, grpc.status.UNIMPLEMENTED,
]);

const env = process.env;
const name = env.WORKER_NAME || `node-${os.hostname()}-${process.pid}`;
const slots = Number(env.MAX_IN_FLIGHT || 4);
const pollIntervalMs = Number(env.POLL_INTERVAL || 5) * 1000;
const category = (env.ACTION_CATEGORY || 'Build').toUpperCase();
const actionTypeId = {
  category: category.startsWith('ACTION_CATEGORY_') ? category : `ACTION_CATEGORY_${category}`,
  owner: 'ACTION_OWNER_CUSTOM',
  provider: env.ACTION_PROVIDER || 'DemoBuilder',
  version: env.ACTION_VERSION || '1',
};

// The proto is loaded at run time; enums travel as their names, int64 as strings.
const packageDefinition = protoLoader.loadSync('codepipeline/jobworker/v1/job_worker.proto', {
  includeDirs: [PROTO_DIR, PROTO_DEPS_DIR], keepCase: false, enums: String, longs: String, defaults: false, oneofs: true,
});
const { JobWorkerService } = grpc.loadPackageDefinition(packageDefinition).codepipeline.jobworker.v1;
// google.rpc.Status and RetryInfo, to read the details in the grpc-status-details-bin trailer.
const rpcTypes = protobuf.loadSync([
  googleProtoFiles.getProtoPath('rpc/status.proto'),
  googleProtoFiles.getProtoPath('rpc/error_details.proto'),
]);
const Status = rpcTypes.lookupType('google.rpc.Status');
const RetryInfo = rpcTypes.lookupType('google.rpc.RetryInfo');

const credentials = env.GATEWAY_TLS_CA
  ? grpc.credentials.createSsl(fs.readFileSync(env.GATEWAY_TLS_CA))
  : grpc.credentials.createInsecure();
const client = new JobWorkerService(env.GATEWAY_ADDRESS || 'localhost:50051', credentials);
const metadata = new grpc.Metadata();
if (env.GATEWAY_TOKEN) metadata.set('authorization', `Bearer ${env.GATEWAY_TOKEN}`);

const log = (message) => console.log(`${new Date().toISOString()} ${name}: ${message}`);
const stopping = new AbortController();

function unary(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

// The wait (ms) a google.rpc.RetryInfo in the status details asks for, if there is one.
function retryDelayMs(err) {
  const [bin] = err.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bin) return undefined;
  for (const detail of Status.decode(bin).details) {
    if (detail.type_url === 'type.googleapis.com/google.rpc.RetryInfo') {
      const { retryDelay = {} } = RetryInfo.toObject(RetryInfo.decode(detail.value), { longs: Number });
      return (retryDelay.seconds ?? 0) * 1000 + (retryDelay.nanos ?? 0) / 1e6;
    }
  }
  return undefined;
}

// Calls one RPC, waiting and retrying while the answer is UNAVAILABLE or RESOURCE_EXHAUSTED: as
// long as RetryInfo says, else a jittered exponential backoff. A job's calls give up after
// JOB_RETRY_MS; a poll retries until the worker stops.
async function call(method, request, { untilStopped = false } = {}) {
  let backoff = FIRST_BACKOFF_MS;
  const giveUpAt = Date.now() + JOB_RETRY_MS;
  for (;;) {
    try {
      return await unary(method, request);
    } catch (err) {
      if (!RETRYABLE.has(err.code)) throw err;
      let wait = retryDelayMs(err);
      if (wait === undefined) {
        wait = Math.random() * backoff;
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
      if (untilStopped ? stopping.signal.aborted : Date.now() + wait > giveUpAt) throw err;
      log(`${method} answered ${grpc.status[err.code]}; retrying in ${Math.round(wait)} ms`);
      await sleep(wait, undefined, untilStopped ? { signal: stopping.signal } : {}).catch(() => {});
    }
  }
}

async function processJob(job) {
  try {
    await call('AcknowledgeJob', { jobId: job.id, nonce: job.nonce });
  } catch (err) {
    if (err.code === grpc.status.ABORTED) {
      log(`job ${job.id} is held by another worker; dropped`);
      return;
    }
    throw err;
  }
  const { jobDetails } = await call('GetJobDetails', { jobId: job.id });
  const { data } = jobDetails;
  const configuration = data.actionConfiguration?.configuration ?? {};
  const outcome = configuration.Outcome || 'succeed';
  const externalExecutionId = `${name}:${job.id}`;

  // The "work": a pause as long as the job asks for.
  await sleep(Number(configuration.WorkMillis || 0));

  let result;
  if (outcome === 'continue' && data.continuationToken === undefined) {
    // Half done: CodePipeline creates a follow-up job carrying the token.
    await call('PutJobSuccessResult', {
      jobId: job.id,
      continuationToken: 'continued',
      executionDetails: { summary: 'first half done', externalExecutionId, percentComplete: 50 },
    });
    result = 'continued';
  } else if (outcome === 'succeed' || outcome === 'continue') {
    await call('PutJobSuccessResult', {
      jobId: job.id,
      executionDetails: { summary: 'done', externalExecutionId, percentComplete: 100 },
    });
    result = 'succeeded';
  } else {
    const failureDetails = outcome === 'fail'
      ? { type: 'FAILURE_TYPE_JOB_FAILED', message: 'failed as asked', externalExecutionId }
      : {
        type: 'FAILURE_TYPE_CONFIGURATION_ERROR',
        message: `Outcome=${outcome} is not one of succeed, fail, continue`,
        externalExecutionId,
      };
    await call('PutJobFailureResult', { jobId: job.id, failureDetails });
    result = 'failed';
  }
  log(`reported ${job.id} ${result}`);
}

async function main() {
  log(`polling for ${actionTypeId.category}/${actionTypeId.provider}/${actionTypeId.version} with ${slots} slots`);
  const inHand = new Set();
  let slotFreed = () => {};
  while (!stopping.signal.aborted) {
    if (inHand.size >= slots) {
      await new Promise((resolve) => { slotFreed = resolve; });
      continue;
    }
    let jobs = [];
    try {
      ({ jobs = [] } = await call('PollForJobs', { actionTypeId, maxBatchSize: slots - inHand.size },
        { untilStopped: true }));
    } catch (err) {
      if (stopping.signal.aborted) break;
      if (FATAL.has(err.code)) {
        log(`PollForJobs failed: ${grpc.status[err.code]} ${err.details}`);
        return 1;
      }
      log(`PollForJobs failed: ${grpc.status[err.code] ?? err.message}; polling again later`);
    }
    for (const job of jobs) {
      const work = processJob(job)
        .catch((err) => log(`job ${job.id}: gave up: ${err.message}`))
        .finally(() => { inHand.delete(work); slotFreed(); });
      inHand.add(work);
    }
    if (jobs.length === 0) {
      await sleep(pollIntervalMs * (0.5 + Math.random()), undefined, { signal: stopping.signal }).catch(() => {});
    }
  }
  log(`stopping; finishing ${inHand.size} job(s) in hand`);
  await Promise.all(inHand);
  log('stopped');
  return 0;
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { stopping.abort(); });
}
main().then((code) => {
  client.close();
  process.exitCode = code;
});
