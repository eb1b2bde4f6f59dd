// The AWS SDK for JavaScript v3 against the emulator's AWS front: the job-worker and third-party
// lifecycles and every modelled error, through the client a Node job worker uses, in the wire
// protocol EMULATOR_PROTOCOL names ("json": awsJson1_1, the SDK's default; "cbor": Smithy RPC v2
// CBOR, the SDK's AwsSmithyRpcV2CborProtocol).
//
// Run by tests/clients/test_emulator_js_sdk.py, which starts the emulator and sets:
//   EMULATOR_URL, EMULATOR_PROTOCOL, EMULATOR_REGION, EMULATOR_ACCESS_KEY_ID,
//   EMULATOR_SECRET_ACCESS_KEY, EMULATOR_ACCOUNT_ID, DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN
// and NODE_PATH (.tools/js-clients/node_modules, filled by scripts/install-test-tools.sh).
//
// The tests share one emulator and run in file order (node:test runs top-level tests one after
// another). Each takes the jobs it needs from the demo queues, except the continuation tests:
// they poll until the follow-up job turns up, dispatching whatever is queued before it, so each
// comes last for its action type.
"use strict";

const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const test = require("node:test");

const sdk = require("@aws-sdk/client-codepipeline");
const { AwsSmithyRpcV2CborProtocol } = require("@aws-sdk/core/protocols");

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};

const ENDPOINT = env("EMULATOR_URL");
const PROTOCOL = env("EMULATOR_PROTOCOL");
const REGION = env("EMULATOR_REGION");
const ACCOUNT_ID = env("EMULATOR_ACCOUNT_ID");
const CREDENTIALS = {
  accessKeyId: env("EMULATOR_ACCESS_KEY_ID"),
  secretAccessKey: env("EMULATOR_SECRET_ACCESS_KEY"),
};
const DEMO_CLIENT_ID = env("DEMO_CLIENT_ID");
const DEMO_CLIENT_TOKEN = env("DEMO_CLIENT_TOKEN");
assert.ok(["json", "cbor"].includes(PROTOCOL), `EMULATOR_PROTOCOL=${PROTOCOL}`);

const DEMO_ACTION_TYPE = { category: "Build", owner: "Custom", provider: "DemoBuilder", version: "1" };
const DEMO_THIRD_PARTY_ACTION_TYPE = { ...DEMO_ACTION_TYPE, owner: "ThirdParty", provider: "DemoPartner" };
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const EXECUTION_DETAILS = { summary: "built it", externalExecutionId: "build-42", percentComplete: 100 };
const FAILURE_DETAILS = { type: "JobFailed", message: "the build broke", externalExecutionId: "build-43" };
// `created` is a timestamp: epoch seconds in JSON, a tag-1 CBOR item in rpcv2Cbor.
const REVISION = {
  revision: "partner-rev-1",
  changeIdentifier: "change-1",
  created: new Date("2026-01-02T03:04:05.678Z"),
  revisionSummary: "built",
};
const WRONG_CLIENT_TOKEN = "a-token-of-another-client-3c9e";

/** Every request the clients of this run sent (method, path and headers, as signed) and the
 * headers of each answer the SDK read as a success. */
const sent = [];
const answered = [];

/** A CodePipeline client for the emulator in PROTOCOL, with no retries; `overrides` replace
 * parts of its configuration (e.g. credentials). */
function client(overrides = {}) {
  const codepipeline = new sdk.CodePipelineClient({
    region: REGION,
    endpoint: ENDPOINT,
    credentials: CREDENTIALS,
    maxAttempts: 1,
    ...(PROTOCOL === "cbor" ? { protocol: AwsSmithyRpcV2CborProtocol } : {}),
    ...overrides,
  });
  codepipeline.middlewareStack.add(
    (next) => async (args) => {
      sent.push({ method: args.request.method, path: args.request.path, headers: { ...args.request.headers } });
      const result = await next(args);
      answered.push({ status: result.response.statusCode, headers: { ...result.response.headers } });
      return result;
    },
    { step: "finalizeRequest", priority: "low", name: "recordSentRequests" },
  );
  return codepipeline;
}

const codepipeline = client();
const call = (Command, input, via = codepipeline) => via.send(new Command(input));

/** Expects `promise` to fail with the modelled error class `ErrorClass` (or, for an error the
 * model does not list, the service exception named `name`) and the HTTP status; returns it. */
async function rejectsWith(promise, ErrorClass, { name = ErrorClass.name, status = 400 } = {}) {
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, `expected ${name}, but the call succeeded`);
  assert.equal(caught.name, name, `${caught.name}: ${caught.message}`);
  assert.ok(caught instanceof ErrorClass, `${caught.name} is not a ${ErrorClass.name}`);
  assert.ok(caught instanceof sdk.CodePipelineServiceException);
  assert.equal(caught.$fault, "client");
  assert.equal(caught.$metadata.httpStatusCode, status, caught.name);
  assert.ok(caught.$metadata.requestId, "an error carries the request id");
  return caught;
}

/** What an output holds besides the SDK's $metadata. */
function withoutMetadata(output) {
  const { $metadata, ...rest } = output;
  assert.equal($metadata.httpStatusCode, 200);
  assert.ok($metadata.requestId, "an answer carries the request id");
  return rest;
}

async function pollOne() {
  const { jobs } = await call(sdk.PollForJobsCommand, { actionTypeId: DEMO_ACTION_TYPE, maxBatchSize: 1 });
  assert.equal(jobs.length, 1, `expected one demo job, got ${JSON.stringify(jobs)}`);
  return jobs[0];
}

async function inProgressJob() {
  const job = await pollOne();
  await call(sdk.AcknowledgeJobCommand, { jobId: job.id, nonce: job.nonce });
  return job;
}

async function pollUntil(Command, actionTypeId, wanted, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  const handedOut = [];
  while (Date.now() < deadline) {
    const { jobs } = await call(Command, { actionTypeId, maxBatchSize: 10 });
    for (const job of jobs) {
      if (await wanted(job)) return job;
      handedOut.push(job);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`no wanted job within ${timeoutMs} ms; polls handed out ${JSON.stringify(handedOut)}`);
}

const reportSuccess = (jobId) =>
  call(sdk.PutJobSuccessResultCommand, { jobId, executionDetails: EXECUTION_DETAILS });
const reportFailure = (jobId) =>
  call(sdk.PutJobFailureResultCommand, { jobId, failureDetails: FAILURE_DETAILS });

// Every job-worker operation that names a job, with nothing but the job id varying.
const OPERATIONS_ON_A_JOB = {
  AcknowledgeJob: (jobId) => call(sdk.AcknowledgeJobCommand, { jobId, nonce: "1" }),
  GetJobDetails: (jobId) => call(sdk.GetJobDetailsCommand, { jobId }),
  PutJobSuccessResult: reportSuccess,
  PutJobFailureResult: reportFailure,
};

const thirdPartyDetails = async (jobId, clientToken = DEMO_CLIENT_TOKEN) =>
  (await call(sdk.GetThirdPartyJobDetailsCommand, { jobId, clientToken })).jobDetails;

async function pollOneThirdParty() {
  const { jobs } = await call(sdk.PollForThirdPartyJobsCommand, {
    actionTypeId: DEMO_THIRD_PARTY_ACTION_TYPE,
    maxBatchSize: 1,
  });
  assert.equal(jobs.length, 1, `expected one demo third-party job, got ${JSON.stringify(jobs)}`);
  return jobs[0];
}

async function inProgressThirdPartyJob() {
  const job = await pollOneThirdParty();
  const { nonce } = await thirdPartyDetails(job.jobId);
  await call(sdk.AcknowledgeThirdPartyJobCommand, { jobId: job.jobId, nonce, clientToken: DEMO_CLIENT_TOKEN });
  return job;
}

const reportThirdPartySuccess = (jobId, clientToken = DEMO_CLIENT_TOKEN, members = {}) =>
  call(sdk.PutThirdPartyJobSuccessResultCommand, { jobId, clientToken, ...members });
const reportThirdPartyFailure = (jobId, clientToken = DEMO_CLIENT_TOKEN) =>
  call(sdk.PutThirdPartyJobFailureResultCommand, { jobId, clientToken, failureDetails: FAILURE_DETAILS });

// Every third-party operation that names a job, with the job id and the client token varying.
const THIRD_PARTY_OPERATIONS_ON_A_JOB = {
  AcknowledgeThirdPartyJob: (jobId, clientToken) =>
    call(sdk.AcknowledgeThirdPartyJobCommand, { jobId, nonce: "1", clientToken }),
  GetThirdPartyJobDetails: thirdPartyDetails,
  PutThirdPartyJobSuccessResult: reportThirdPartySuccess,
  PutThirdPartyJobFailureResult: reportThirdPartyFailure,
};

// --- the job-worker API ---

test("a job goes from poll through acknowledge and details to success", async () => {
  const job = await pollOne();
  assert.match(job.id, JOB_ID);
  assert.ok(job.nonce);
  assert.equal(job.accountId, ACCOUNT_ID);
  assert.deepEqual(job.data.actionTypeId, DEMO_ACTION_TYPE);
  const credentials = job.data.artifactCredentials;
  assert.ok(credentials.accessKeyId && credentials.secretAccessKey && credentials.sessionToken);

  const acknowledged = await call(sdk.AcknowledgeJobCommand, { jobId: job.id, nonce: job.nonce });
  assert.deepEqual(withoutMetadata(acknowledged), { status: "InProgress" });

  const { jobDetails } = await call(sdk.GetJobDetailsCommand, { jobId: job.id });
  assert.equal(jobDetails.id, job.id);
  assert.equal(jobDetails.accountId, ACCOUNT_ID);
  assert.deepEqual(jobDetails.data.actionTypeId, DEMO_ACTION_TYPE);

  const response = await call(sdk.PutJobSuccessResultCommand, {
    jobId: job.id,
    currentRevision: REVISION,
    executionDetails: EXECUTION_DETAILS,
    outputVariables: { commit: "abc123" },
  });
  assert.deepEqual(withoutMetadata(response), {});
});

test("a failure result completes an in-progress job", async () => {
  const job = await inProgressJob();
  assert.deepEqual(withoutMetadata(await reportFailure(job.id)), {});
  await rejectsWith(reportFailure(job.id), sdk.InvalidJobStateException);
});

test("a wrong nonce is InvalidNonceException and a dispatched job takes no result", async () => {
  const job = await pollOne();
  await rejectsWith(
    call(sdk.AcknowledgeJobCommand, { jobId: job.id, nonce: `${job.nonce}-not-mine` }),
    sdk.InvalidNonceException,
  );
  await rejectsWith(reportSuccess(job.id), sdk.InvalidJobStateException);
  await rejectsWith(reportFailure(job.id), sdk.InvalidJobStateException);
  // The details of a custom job are not a third-party job's.
  await rejectsWith(thirdPartyDetails(job.id), sdk.InvalidJobException);
});

test("an unknown job id is JobNotFoundException for every operation on a job", async (t) => {
  for (const [name, operation] of Object.entries(OPERATIONS_ON_A_JOB)) {
    await t.test(name, () => rejectsWith(operation(randomUUID()), sdk.JobNotFoundException));
  }
});

test("a job id that is not a UUID is a ValidationException worded as AWS words it", async (t) => {
  for (const [name, operation] of Object.entries(OPERATIONS_ON_A_JOB)) {
    await t.test(name, async () => {
      const error = await rejectsWith(operation("not-a-uuid"), sdk.ValidationException);
      assert.equal(
        error.message,
        "1 validation error detected: Value 'not-a-uuid' at 'jobId' failed to satisfy constraint: " +
          "Member must satisfy regular expression pattern: " +
          "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
      );
    });
  }
});

test("polling an unknown action type is ActionTypeNotFoundException", async () => {
  await rejectsWith(
    call(sdk.PollForJobsCommand, {
      actionTypeId: { ...DEMO_ACTION_TYPE, provider: "NoSuchProvider" },
      maxBatchSize: 1,
    }),
    sdk.ActionTypeNotFoundException,
  );
});

test("output variables over the size limit are OutputVariablesSizeExceededException", async () => {
  const job = await inProgressJob();
  const tooLarge = Object.fromEntries([...Array(7).keys()].map((i) => [`var${i}`, "x".repeat(20_000)]));
  await rejectsWith(
    call(sdk.PutJobSuccessResultCommand, { jobId: job.id, outputVariables: tooLarge }),
    sdk.OutputVariablesSizeExceededException,
  );
  const accepted = await call(sdk.PutJobSuccessResultCommand, { jobId: job.id, outputVariables: { commit: "abc123" } });
  assert.deepEqual(withoutMetadata(accepted), {});
});

test("success with a continuation token queues a follow-up job carrying it", async () => {
  const job = await inProgressJob();
  const response = await call(sdk.PutJobSuccessResultCommand, {
    jobId: job.id,
    continuationToken: "step-2",
    executionDetails: EXECUTION_DETAILS,
  });
  assert.deepEqual(withoutMetadata(response), {});

  const followUp = await pollUntil(
    sdk.PollForJobsCommand,
    DEMO_ACTION_TYPE,
    (polled) => polled.data.continuationToken === "step-2",
  );
  assert.notEqual(followUp.id, job.id);
  assert.deepEqual(followUp.data.actionTypeId, DEMO_ACTION_TYPE);
  const acknowledged = await call(sdk.AcknowledgeJobCommand, { jobId: followUp.id, nonce: followUp.nonce });
  assert.equal(acknowledged.status, "InProgress");
  assert.deepEqual(withoutMetadata(await reportSuccess(followUp.id)), {});
});

// --- the third-party job API ---

test("a third-party job goes from poll through details and acknowledge to success", async () => {
  const job = await pollOneThirdParty();
  assert.deepEqual(Object.keys(job).sort(), ["clientId", "jobId"]);
  assert.equal(job.clientId, DEMO_CLIENT_ID);
  assert.match(job.jobId, JOB_ID);

  const found = await thirdPartyDetails(job.jobId);
  assert.deepEqual(Object.keys(found).sort(), ["data", "id", "nonce"]);
  assert.equal(found.id, job.jobId);
  assert.deepEqual(found.data.actionTypeId, DEMO_THIRD_PARTY_ACTION_TYPE);
  assert.equal(found.data.actionConfiguration.configuration.ProjectName, "demo-app");
  assert.equal(found.data.pipelineContext.pipelineName, "demo-pipeline");
  assert.ok(found.data.inputArtifacts[0].location.s3Location.bucketName);

  const acknowledged = await call(sdk.AcknowledgeThirdPartyJobCommand, {
    jobId: job.jobId,
    nonce: found.nonce,
    clientToken: DEMO_CLIENT_TOKEN,
  });
  assert.deepEqual(withoutMetadata(acknowledged), { status: "InProgress" });
  const response = await reportThirdPartySuccess(job.jobId, DEMO_CLIENT_TOKEN, {
    currentRevision: REVISION,
    executionDetails: EXECUTION_DETAILS,
  });
  assert.deepEqual(withoutMetadata(response), {});
});

test("a failure result completes an in-progress third-party job", async () => {
  const job = await inProgressThirdPartyJob();
  assert.deepEqual(withoutMetadata(await reportThirdPartyFailure(job.jobId)), {});
  await rejectsWith(reportThirdPartyFailure(job.jobId), sdk.InvalidJobStateException);
});

test("another client's token is InvalidClientTokenException and never echoed", async (t) => {
  const job = await pollOneThirdParty();
  for (const [name, operation] of Object.entries(THIRD_PARTY_OPERATIONS_ON_A_JOB)) {
    await t.test(name, async () => {
      const error = await rejectsWith(operation(job.jobId, WRONG_CLIENT_TOKEN), sdk.InvalidClientTokenException);
      assert.ok(!error.message.includes(WRONG_CLIENT_TOKEN) && !error.message.includes(DEMO_CLIENT_TOKEN));
    });
  }
});

test("a stale nonce and a result for a dispatched third-party job are refused", async () => {
  const job = await pollOneThirdParty();
  await rejectsWith(
    call(sdk.AcknowledgeThirdPartyJobCommand, { jobId: job.jobId, nonce: "12345", clientToken: DEMO_CLIENT_TOKEN }),
    sdk.InvalidNonceException,
  );
  await rejectsWith(reportThirdPartySuccess(job.jobId), sdk.InvalidJobStateException);
  await rejectsWith(reportThirdPartyFailure(job.jobId), sdk.InvalidJobStateException);
});

test("an unknown third-party job is JobNotFoundException for every operation on a job", async (t) => {
  for (const [name, operation] of Object.entries(THIRD_PARTY_OPERATIONS_ON_A_JOB)) {
    await t.test(name, () =>
      rejectsWith(operation(`partner-job-${randomUUID()}`, DEMO_CLIENT_TOKEN), sdk.JobNotFoundException),
    );
  }
});

test("a 257-character client token is a ValidationException that never quotes it", async (t) => {
  const token = "t".repeat(257);
  for (const [name, operation] of Object.entries(THIRD_PARTY_OPERATIONS_ON_A_JOB)) {
    await t.test(name, async () => {
      const error = await rejectsWith(operation("partner-job", token), sdk.ValidationException);
      assert.match(error.message, /^1 validation error detected: .*'clientToken' failed to satisfy constraint: /);
      assert.ok(!error.message.includes(token));
    });
  }
});

test("polling for third-party jobs of an unknown or a custom action type is refused", async () => {
  await rejectsWith(
    call(sdk.PollForThirdPartyJobsCommand, {
      actionTypeId: { ...DEMO_THIRD_PARTY_ACTION_TYPE, provider: "NoSuchPartner" },
      maxBatchSize: 1,
    }),
    sdk.ActionTypeNotFoundException,
  );
  await rejectsWith(
    call(sdk.PollForThirdPartyJobsCommand, { actionTypeId: DEMO_ACTION_TYPE, maxBatchSize: 1 }),
    sdk.ValidationException,
  );
});

test("a continuation token queues a follow-up third-party job carrying it", async () => {
  const job = await inProgressThirdPartyJob();
  const response = await reportThirdPartySuccess(job.jobId, DEMO_CLIENT_TOKEN, { continuationToken: "step-2" });
  assert.deepEqual(withoutMetadata(response), {});
  const followUp = await pollUntil(
    sdk.PollForThirdPartyJobsCommand,
    DEMO_THIRD_PARTY_ACTION_TYPE,
    async (polled) => (await thirdPartyDetails(polled.jobId)).data.continuationToken === "step-2",
  );
  assert.notEqual(followUp.jobId, job.jobId);
});

// --- authentication ---

test("a session token the front did not issue is UnrecognizedClientException", async () => {
  const bogus = client({ credentials: { ...CREDENTIALS, sessionToken: "not-a-token-the-emulator-issued" } });
  await rejectsWith(
    call(sdk.PollForJobsCommand, { actionTypeId: DEMO_ACTION_TYPE, maxBatchSize: 1 }, bogus),
    sdk.CodePipelineServiceException,
    { name: "UnrecognizedClientException" },
  );
});

test("a request signed with the wrong secret is InvalidSignatureException", async () => {
  const intruder = client({ credentials: { ...CREDENTIALS, secretAccessKey: "not-the-emulator-secret" } });
  await rejectsWith(
    call(sdk.PollForJobsCommand, { actionTypeId: DEMO_ACTION_TYPE, maxBatchSize: 1 }, intruder),
    sdk.CodePipelineServiceException,
    { name: "InvalidSignatureException" },
  );
});

// --- the wire ---

const lowerCased = (headers) => Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));

test("every request went out and every answer came back in the protocol asked for", () => {
  assert.ok(sent.length > 50, `only ${sent.length} requests were recorded`);
  for (const request of sent) {
    const headers = lowerCased(request.headers);
    assert.equal(request.method, "POST");
    assert.match(headers.authorization, /^AWS4-HMAC-SHA256 Credential=/);
    if (PROTOCOL === "cbor") {
      assert.match(request.path, /^\/service\/CodePipeline_20150709\/operation\/[A-Za-z]+$/);
      assert.equal(headers["smithy-protocol"], "rpc-v2-cbor");
      assert.equal(headers["content-type"], "application/cbor");
      assert.equal(headers["x-amz-target"], undefined);
    } else {
      assert.equal(request.path, "/");
      assert.match(headers["x-amz-target"], /^CodePipeline_20150709\.[A-Za-z]+$/);
      assert.equal(headers["content-type"], "application/x-amz-json-1.1");
    }
  }
  assert.ok(answered.length > 20, `only ${answered.length} answers were recorded`);
  for (const answer of answered) {
    const headers = lowerCased(answer.headers);
    assert.equal(answer.status, 200);
    assert.ok(headers["x-amzn-requestid"]);
    if (PROTOCOL === "cbor") {
      assert.equal(headers["smithy-protocol"], "rpc-v2-cbor");
      // Put*Result and the like have no output: rpcv2Cbor answers them without a body.
      if (headers["content-length"] !== "0") assert.equal(headers["content-type"], "application/cbor");
    } else {
      assert.equal(headers["content-type"], "application/x-amz-json-1.1");
    }
  }
});
