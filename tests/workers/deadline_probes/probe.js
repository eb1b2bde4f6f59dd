// Makes one AcknowledgeJob call through the gateway with @grpc/grpc-js and a deadline of the
// given milliseconds, and prints how it ended as one JSON line: the code, the ErrorInfo reason and
// its indeterminate flag (empty when the status carries no details: the client library's own
// DEADLINE_EXCEEDED), and the milliseconds it took.
// Usage: node probe.js ADDRESS JOB_ID NONCE TIMEOUT_MS   (NODE_PATH: where @grpc/grpc-js is)
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtoFiles = require('google-proto-files');

const repo = path.join(__dirname, '../../..');
const definition = protoLoader.loadSync('codepipeline/jobworker/v1/job_worker.proto', {
  includeDirs: [path.join(repo, 'proto'), path.join(repo, 'proto-deps')],
});
const { JobWorkerService } = grpc.loadPackageDefinition(definition).codepipeline.jobworker.v1;
const rpc = protobuf.loadSync([
  googleProtoFiles.getProtoPath('rpc/status.proto'),
  googleProtoFiles.getProtoPath('rpc/error_details.proto'),
]);
const Status = rpc.lookupType('google.rpc.Status');
const ErrorInfo = rpc.lookupType('google.rpc.ErrorInfo');

const [address, jobId, nonce, timeoutMs] = process.argv.slice(2);
const client = new JobWorkerService(address, grpc.credentials.createInsecure());

function call(method, request, options = {}) {
  return new Promise((resolve) => {
    client[method](request, new grpc.Metadata(), options, (err) => resolve(err));
  });
}

(async () => {
  // Connect first, so the deadline measures the call alone.
  await call('getJobDetails', { jobId });
  const started = Date.now();
  const err = await call('acknowledgeJob', { jobId, nonce }, { deadline: Date.now() + Number(timeoutMs) });
  const result = { code: 'OK', reason: '', indeterminate: '', elapsed_ms: Date.now() - started };
  if (err) {
    result.code = Object.keys(grpc.status).find((name) => grpc.status[name] === err.code);
    const [bin] = err.metadata?.get('grpc-status-details-bin') ?? [];
    for (const detail of bin ? Status.decode(bin).details : []) {
      if (detail.type_url === 'type.googleapis.com/google.rpc.ErrorInfo') {
        const info = ErrorInfo.decode(detail.value);
        result.reason = info.reason;
        result.indeterminate = info.metadata.indeterminate ?? '';
      }
    }
  }
  console.log(JSON.stringify(result));
  client.close();
})();
