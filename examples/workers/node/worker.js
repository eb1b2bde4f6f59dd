// A CodePipeline custom-action job worker that speaks gRPC to codepipeline-gateway.
//
// Gets jobs for as many free slots as it has, by polling (GATEWAY_MODE=poll) or from the gateway's
// job feed (GATEWAY_MODE=stream, with credit = free slots); acknowledges each (dropping it when
// another worker holds it), reads its details, reads its input artifacts and writes its output
// artifacts through the gateway's ArtifactService (ARTIFACTS=on, the default: no AWS SDK, no S3
// credentials), does the work its configuration asks for, and reports the result. Settings come
// from the environment; see README.md. SIGTERM stops taking jobs, lets the jobs in hand finish,
// and exits 0.
'use strict';

const crypto = require('node:crypto');
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
const TRANSFER_TIMEOUT_MS = 600_000; // an artifact's download or upload, however large
const JOB_RETRY_MS = 120_000; // how long a job's call keeps retrying before the job is given up
const FIRST_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 30_000;
const DEFAULT_MODE = 'stream';
// Worth retrying after a pause: the gateway or CodePipeline is throttling or briefly unreachable.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED]);
// A poll, or the opening of a job stream, failing with these is a configuration problem that
// waiting does not fix.
const FATAL = new Set([
  grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED, grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND, grpc.status.UNIMPLEMENTED,
]);

const env = process.env;
const name = env.WORKER_NAME || `node-${os.hostname()}-${process.pid}`;
const slots = Number(env.MAX_IN_FLIGHT || 4);
const pollIntervalMs = Number(env.POLL_INTERVAL || 5) * 1000;
const mode = env.GATEWAY_MODE || DEFAULT_MODE;
// ARTIFACTS=off: the job's artifacts are left alone (the work is the pause alone).
const artifacts = (env.ARTIFACTS || 'on').toLowerCase();
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
const { JobWorkerService, ArtifactService } = grpc.loadPackageDefinition(packageDefinition).codepipeline.jobworker.v1;
// google.rpc.Status and RetryInfo, to read the details in the grpc-status-details-bin trailer.
const rpcTypes = protobuf.loadSync([
  googleProtoFiles.getProtoPath('rpc/status.proto'),
  googleProtoFiles.getProtoPath('rpc/error_details.proto'),
]);
const Status = rpcTypes.lookupType('google.rpc.Status');
const RetryInfo = rpcTypes.lookupType('google.rpc.RetryInfo');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');

const credentials = env.GATEWAY_TLS_CA
  ? grpc.credentials.createSsl(fs.readFileSync(env.GATEWAY_TLS_CA))
  : grpc.credentials.createInsecure();
const client = new JobWorkerService(env.GATEWAY_ADDRESS || 'localhost:50051', credentials);
// The same channel: a client made from another's shares its connection.
const artifactClient = new ArtifactService(env.GATEWAY_ADDRESS || 'localhost:50051', credentials, {
  channelOverride: client.getChannel(),
});
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

// The wait (ms) a google.rpc.RetryInfo in the status details of a call's error or status asks
// for, if there is one.
function retryDelayMs({ metadata }) {
  const [bin] = metadata?.get('grpc-status-details-bin') ?? [];
  return bin ? retryDelayOf(Status.decode(bin).details) : undefined;
}

// The same, from a google.rpc.Status's details (decoded by protobufjs or by proto-loader).
function retryDelayOf(details = []) {
  for (const detail of details) {
    if ((detail.type_url ?? detail.typeUrl) === 'type.googleapis.com/google.rpc.RetryInfo') {
      const { retryDelay = {} } = RetryInfo.toObject(RetryInfo.decode(detail.value), { longs: Number });
      return (retryDelay.seconds ?? 0) * 1000 + (retryDelay.nanos ?? 0) / 1e6;
    }
  }
  return undefined;
}

// The google.rpc.ErrorInfo ({ reason, domain, metadata }) in a call error's status details, if any.
function errorInfo({ metadata }) {
  const [bin] = metadata?.get('grpc-status-details-bin') ?? [];
  for (const detail of bin ? Status.decode(bin).details : []) {
    if ((detail.type_url ?? detail.typeUrl) === 'type.googleapis.com/google.rpc.ErrorInfo') {
      return ErrorInfo.toObject(ErrorInfo.decode(detail.value));
    }
  }
  return undefined;
}

// A jittered wait of up to `backoff` ms, and the backoff after it: doubled, to at most MAX_BACKOFF_MS.
const backoffStep = (backoff) => [Math.random() * backoff, Math.min(backoff * 2, MAX_BACKOFF_MS)];

// Calls one RPC, waiting and retrying while the answer is UNAVAILABLE or RESOURCE_EXHAUSTED: as
// long as RetryInfo says, else a jittered exponential backoff. A job's calls give up after
// JOB_RETRY_MS; a poll retries until the worker stops.
function call(method, request, { untilStopped = false } = {}) {
  return retrying(method, () => unary(method, request), { untilStopped });
}

// Runs `attempt` (one call, or one whole transfer) again while it fails UNAVAILABLE or
// RESOURCE_EXHAUSTED, as `call` does.
// An answer marked indeterminate (it was lost: the call may have taken effect) is repeated too,
// which is safe; a result repeated after one that answers FAILED_PRECONDITION
// InvalidJobStateException was delivered by the earlier attempt.
async function retrying(method, attempt, { untilStopped = false } = {}) {
  let backoff = FIRST_BACKOFF_MS;
  const giveUpAt = Date.now() + JOB_RETRY_MS;
  let uncertain = false; // an earlier attempt may have taken effect
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      const info = errorInfo(err);
      if (uncertain && method.startsWith('Put') && err.code === grpc.status.FAILED_PRECONDITION
          && info?.reason === 'InvalidJobStateException') {
        log(`${method} was delivered by an earlier attempt`);
        return undefined;
      }
      const indeterminate = info?.metadata?.indeterminate === 'true';
      if (!RETRYABLE.has(err.code) && !indeterminate) throw err;
      uncertain ||= indeterminate;
      let wait = retryDelayMs(err);
      if (wait === undefined) [wait, backoff] = backoffStep(backoff);
      if (untilStopped ? stopping.signal.aborted : Date.now() + wait > giveUpAt) throw err;
      log(`${method} answered ${grpc.status[err.code]}; retrying in ${Math.round(wait)} ms`);
      await sleep(wait, undefined, untilStopped ? { signal: stopping.signal } : {}).catch(() => {});
    }
  }
}

// An artifact transfer the gateway refused (not a pause): the job fails, saying why.
class ArtifactFailed extends Error {}

// A failed transfer's error as an ArtifactFailed, unless it is a pause that outlasted the retries
// (the job is then given up, as for its other calls).
function refusal(what, err) {
  if (RETRYABLE.has(err.code) || err.code === undefined) return err;
  return new ArtifactFailed(`${what}: ${grpc.status[err.code]} ${err.details}`.slice(0, 5000));
}

// What the worker writes to each output artifact: the job, the output's name, and for each input
// artifact (in the job data's order) its name, size and SHA-256 (hex).
function manifest(jobId, output, inputs) {
  const lines = [`job ${jobId}`, `output ${output}`, ...inputs.map((i) => `input ${i.name} ${i.size} ${i.sha256}`)];
  return Buffer.from(lines.map((line) => `${line}\n`).join(''));
}

// One download of an input artifact, hashing the bytes as they come (nothing is kept).
function download(request) {
  return new Promise((resolve, reject) => {
    const stream = artifactClient.DownloadInputArtifact(request, metadata, { deadline: Date.now() + TRANSFER_TIMEOUT_MS });
    const digest = crypto.createHash('sha256');
    let size = 0;
    stream.on('data', ({ chunk }) => { // the metadata first, then the bytes
      if (chunk) {
        digest.update(chunk);
        size += chunk.length;
      }
    });
    stream.on('error', reject);
    stream.on('end', () => resolve({ size, sha256: digest.digest('hex') }));
  });
}

// Downloads every input artifact through the gateway: [{name, size, sha256}], in the job data's
// order. A retry starts a download afresh.
async function readInputs(job, data) {
  const read = [];
  for (const { name } of data.inputArtifacts ?? []) {
    const request = { job: { jobId: job.id }, artifactName: name };
    const { size, sha256 } = await retrying('DownloadInputArtifact', () => download(request))
      .catch((err) => { throw refusal(`input artifact ${name}`, err); });
    log(`job ${job.id}: read input artifact ${name} (${size} bytes)`);
    read.push({ name, size, sha256 });
  }
  return read;
}

// One upload of an output artifact: the header, the bytes, then the end (without it, the gateway
// cannot tell a finished stream from a cut one, and stores nothing).
function upload(header, body) {
  return new Promise((resolve, reject) => {
    const stream = artifactClient.UploadOutputArtifact(metadata, { deadline: Date.now() + TRANSFER_TIMEOUT_MS },
      (err, response) => (err ? reject(err) : resolve(response)));
    stream.write({ header });
    stream.write({ chunk: body });
    stream.write({ end: {} });
    stream.end();
  });
}

// Uploads every output artifact through the gateway: the manifest of the inputs, declared with
// its size (the gateway stores nothing if the bytes differ).
async function writeOutputs(job, data, inputs) {
  for (const { name } of data.outputArtifacts ?? []) {
    const body = manifest(job.id, name, inputs);
    const header = { job: { jobId: job.id }, artifactName: name, contentType: 'text/plain', sizeBytes: body.length };
    await retrying('UploadOutputArtifact', () => upload(header, body))
      .catch((err) => { throw refusal(`output artifact ${name}`, err); });
    log(`job ${job.id}: wrote output artifact ${name} (${body.length} bytes)`);
  }
}

// A polled job: AcknowledgeJob with its nonce, then the rest.
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
  await completeJob(job);
}

// An acknowledged job: its details, the work, the result. With ARTIFACTS=on the work reads every
// input artifact first, and a job that succeeds writes every output artifact before its result;
// an artifact the gateway refuses fails the job.
async function completeJob(job) {
  const { jobDetails } = await call('GetJobDetails', { jobId: job.id });
  const { data } = jobDetails;
  const externalExecutionId = `${name}:${job.id}`;
  try {
    await work(job, data, externalExecutionId);
  } catch (err) {
    if (!(err instanceof ArtifactFailed)) throw err;
    log(`job ${job.id}: ${err.message}`);
    await call('PutJobFailureResult', {
      jobId: job.id,
      failureDetails: { type: 'FAILURE_TYPE_JOB_FAILED', message: err.message, externalExecutionId },
    });
    log(`reported ${job.id} failed`);
  }
}

// The work the job's configuration asks for, and its result.
async function work(job, data, externalExecutionId) {
  const configuration = data.actionConfiguration?.configuration ?? {};
  const outcome = configuration.Outcome || 'succeed';
  const inputs = artifacts === 'on' ? await readInputs(job, data) : [];

  // The "work": a pause as long as the job asks for.
  await sleep(Number(configuration.WorkMillis || 0));

  let result;
  if (outcome === 'continue' && data.continuationToken === undefined) {
    // Half done: CodePipeline creates a follow-up job carrying the token, which writes the outputs.
    await call('PutJobSuccessResult', {
      jobId: job.id,
      continuationToken: 'continued',
      executionDetails: { summary: 'first half done', externalExecutionId, percentComplete: 50 },
    });
    result = 'continued';
  } else if (outcome === 'succeed' || outcome === 'continue') {
    if (artifacts === 'on') await writeOutputs(job, data, inputs);
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

const inHand = new Set(); // the jobs being worked on (promises)

// Starts work on a job; `then` runs when it is done.
function start(work, job, then) {
  const done = work(job)
    .catch((err) => log(`job ${job.id}: gave up: ${err.message}`))
    .finally(() => { inHand.delete(done); then(); });
  inHand.add(done);
}

// PollForJobs for as many jobs as there are free slots, until the worker stops.
async function poll() {
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
    for (const job of jobs) start(processJob, job, () => slotFreed());
    if (jobs.length === 0) {
      await sleep(pollIntervalMs * (0.5 + Math.random()), undefined, { signal: stopping.signal }).catch(() => {});
    }
  }
  return 0;
}

// Stream mode: the open job stream (with the credit it holds and its jobs waiting for their
// acknowledgement), and the jobs in hand from their delivery to their result.
let feed = null;
let held = 0;

// Jobs are worked on in at most `slots` at once: after a reopen, jobs held from the last stream
// may fill the slots for a while.
let working = 0;
const waitingForSlot = [];
async function completeInSlot(job) {
  if (working < slots) working += 1;
  else await new Promise((resolve) => { waitingForSlot.push(resolve); }); // handed a slot
  try {
    await completeJob(job);
  } finally {
    const next = waitingForSlot.shift();
    if (next) next();
    else working -= 1;
  }
}

// A job is done with (reported, or dropped): its slot is free.
function finished() {
  held -= 1;
  grantFreeSlots();
}

// Gives the stream credit for the free slots it holds none for. Jobs held from an earlier stream
// free slots that the stream's first credit already counted, so they bring no credit.
function grantFreeSlots() {
  const more = feed && slots - held - feed.credit;
  if (more > 0) {
    feed.credit += more;
    feed.send({ credit: { jobs: more } });
  }
}

// A job delivered on the stream: it uses a slot and one credit, and is acknowledged at once. One
// delivered again (its lease ended while its acknowledgement waited for a retry) keeps its slot and
// its waiting acknowledgement, and gets its credit back.
function delivered(stream, job) {
  stream.credit -= 1;
  if (stream.unacknowledged.has(job.id)) {
    grantFreeSlots();
    return;
  }
  held += 1;
  stream.unacknowledged.set(job.id, { job, backoff: FIRST_BACKOFF_MS, giveUpAt: Date.now() + JOB_RETRY_MS });
  stream.send({ acknowledge: { jobId: job.id } });
}

// The answer to an acknowledgement: work the job, acknowledge again after a wait, or drop it.
function acknowledged(stream, { jobId, error }) {
  const pending = stream.unacknowledged.get(jobId);
  if (!pending) return;
  stream.unacknowledged.delete(jobId);
  if (!error) {
    start(completeInSlot, pending.job, finished);
    return;
  }
  if (RETRYABLE.has(error.code) && !stream.closed) {
    let wait = retryDelayOf(error.details);
    if (wait === undefined) [wait, pending.backoff] = backoffStep(pending.backoff);
    if (Date.now() + wait < pending.giveUpAt) {
      log(`AcknowledgeJob answered ${grpc.status[error.code]}; retrying in ${Math.round(wait)} ms`);
      stream.unacknowledged.set(jobId, pending);
      setTimeout(() => stream.send({ acknowledge: { jobId } }), wait).unref(); // moot once the worker exits
      return;
    }
  }
  if (error.code === grpc.status.ABORTED) log(`job ${jobId} is held by another worker; dropped`);
  else log(`job ${jobId}: gave up: ${grpc.status[error.code]} ${error.message}`);
  finished();
}

// Opens a stream and serves it until it ends, with its status; stopping closes its sending side.
// Jobs delivered on it and not acknowledged by its end are dropped.
function streamOnce() {
  const call = client.StreamJobs(metadata);
  const stream = {
    credit: slots,
    unacknowledged: new Map(),
    closed: false,
    send(message) { if (!this.closed) call.write(message); },
    close() { if (!this.closed) { this.closed = true; call.end(); } },
  };
  stream.send({ subscription: { actionTypeId, maxOutstandingJobs: slots } });
  feed = stream;
  const close = () => stream.close();
  stopping.signal.addEventListener('abort', close);
  if (stopping.signal.aborted) close();
  call.on('data', (response) => {
    if (response.job) delivered(stream, response.job);
    else if (response.acknowledged) acknowledged(stream, response.acknowledged);
  });
  call.on('error', () => {}); // its status says how it ended
  return new Promise((resolve) => {
    call.on('status', (status) => {
      stopping.signal.removeEventListener('abort', close);
      feed = null;
      stream.closed = true;
      for (const jobId of stream.unacknowledged.keys()) {
        log(`job ${jobId} was not acknowledged before its stream ended; dropped`);
        held -= 1;
      }
      resolve(status);
    });
  });
}

// StreamJobs with credit = free slots, reopened with backoff whenever it ends, until the worker stops.
async function stream() {
  let backoff = FIRST_BACKOFF_MS;
  while (!stopping.signal.aborted) {
    const openedAt = Date.now();
    const status = await streamOnce();
    if (stopping.signal.aborted) break;
    if (FATAL.has(status.code)) {
      log(`StreamJobs failed: ${grpc.status[status.code]} ${status.details}`);
      return 1;
    }
    if (Date.now() - openedAt >= MAX_BACKOFF_MS) backoff = FIRST_BACKOFF_MS; // it ran a good while
    let wait = retryDelayMs(status);
    if (wait === undefined) [wait, backoff] = backoffStep(backoff);
    log(`StreamJobs ended: ${grpc.status[status.code]} ${status.details}; reopening in ${Math.round(wait)} ms`);
    await sleep(wait, undefined, { signal: stopping.signal }).catch(() => {});
  }
  return 0;
}

async function main() {
  if (mode !== 'poll' && mode !== 'stream') {
    log(`GATEWAY_MODE must be poll or stream, not ${JSON.stringify(mode)}`);
    return 1;
  }
  if (artifacts !== 'on' && artifacts !== 'off') {
    log(`ARTIFACTS must be on or off, not ${JSON.stringify(artifacts)}`);
    return 1;
  }
  const { category: type, provider, version } = actionTypeId;
  log(`${mode === 'poll' ? 'polling' : 'streaming'} for ${type}/${provider}/${version} with ${slots} slots`);
  const code = await (mode === 'poll' ? poll() : stream());
  if (code !== 0) return code;
  log(`stopping; finishing ${inHand.size} job(s) in hand`);
  await Promise.all(inHand);
  log('stopped');
  return 0;
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { stopping.abort(); });
}
main().then((code) => {
  client.close(); // (and artifactClient's channel, the same one)
  process.exitCode = code;
});
