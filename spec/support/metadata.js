#!/usr/bin/env node
// metadata.js - one loopback HTTP server (no npm dependencies) that speaks
// the credential APIs the chain calls: EC2 instance metadata with IMDSv2
// session tokens, the ECS/EKS container credentials endpoint, STS
// AssumeRole / AssumeRoleWithWebIdentity (query protocol, real XML shapes;
// AssumeRole's SigV4 signature is verified with node:crypto against the
// known test secrets and the temporary keys this server issued), and IAM
// Identity Center: the portal's GetRoleCredentials and SSO OIDC CreateToken.
//
//   node spec/support/metadata.js '{"parent": PID, ...config}'
//     starts the server detached on a free port, prints {"pid","port","log"}
//     and exits; the server stops when `parent` dies or on SIGTERM.
//
// Config (startup JSON, or POST /__meta/config with a partial object that
// is merged in):
//   keys:      { AccessKeyId: secret }   long-term keys STS accepts
//   imds:      { role, expires_in, token_status (200 | 403 | 404 | ...),
//                v1 (serve GETs without a token), credentials_status,
//                max_token_ttl (21600), delay_ms (before every answer) }
//   container: { path, token (expected Authorization, null = none),
//                expires_in, status }
//   sts:       { expires_in, web_identity_token (expected), region (expected,
//                null = any), max_skew_s (300), status, code, message }
//   sso:       { access_tokens: [valid bearer tokens], account_id, role_name,
//                expires_in, echo (error messages quote the bearer token) }
//   oidc:      { client_id, client_secret, refresh_token (expected), expires_in,
//                rotate (answer a new refresh token), echo (quote the secrets) }
//   fail_next: { sts, imds, container, sso, oidc: answer that many requests
//                of the kind with a 500 before serving normally }
// Control: GET /__meta/stats (counters), GET /__meta/requests (log),
// POST /__meta/reset (counters and log), POST /__meta/revoke (forget IMDS
// session tokens). Control requests are neither counted nor logged.
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const ROOT = path.resolve(__dirname, '..', '..');
const TMP = path.join(ROOT, 'spec', '.tmp');

// ------------------------------------------------------------ launcher

if (!process.env.KINESIS_METADATA_SERVE) {
  fs.mkdirSync(TMP, { recursive: true });
  const log = path.join(TMP, `metadata-${process.pid}.log`);
  const fd = fs.openSync(log, 'a');
  const child = spawn(process.execPath, [__filename, process.argv[2] || '{}'], {
    detached: true,
    stdio: ['ignore', 'pipe', fd],
    env: Object.assign({}, process.env, { KINESIS_METADATA_SERVE: '1' }),
  });
  fs.closeSync(fd);
  let buf = '';
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ error: 'metadata server did not start', log }) + '\n');
    try { process.kill(-child.pid, 'SIGKILL'); } catch (e) { /* gone */ }
    process.exit(1);
  }, 10000);
  child.on('exit', (code, signal) => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ error: `metadata server exited (${signal || code})`, log }) + '\n');
    process.exit(1);
  });
  child.stdout.on('data', (chunk) => {
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    clearTimeout(timer);
    const info = JSON.parse(buf.slice(0, nl));
    info.log = log;
    process.stdout.write(JSON.stringify(info) + '\n');
    child.stdout.destroy();
    child.removeAllListeners('exit');
    child.unref();
    process.exit(0);
  });
  return;
}

// ------------------------------------------------------------ state

const config = {
  keys: { AKIDSTSTEST: 'sts-test-secret-key' },
  imds: { role: 'test-role', expires_in: 21600, token_status: 200, v1: false,
          credentials_status: 200, max_token_ttl: 21600, delay_ms: 0 },
  container: { path: '/v2/credentials/test-id', token: null, expires_in: 3600, status: 200 },
  sts: { expires_in: 3600, web_identity_token: 'test-web-identity-token', region: null,
         max_skew_s: 300, status: 200, code: null, message: null },
  sso: { access_tokens: [], account_id: '123456789012', role_name: 'ReadOnly', expires_in: 3600,
         echo: false },
  oidc: { client_id: 'test-client-id', client_secret: 'test-client-secret',
          refresh_token: 'test-refresh-token', expires_in: 28800, rotate: true, echo: false },
  fail_next: { sts: 0, imds: 0, container: 0, sso: 0, oidc: 0 },
};

function merge(dst, src) {
  for (const [k, v] of Object.entries(src || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v) && dst[k] && typeof dst[k] === 'object') {
      merge(dst[k], v);
    } else {
      dst[k] = v;
    }
  }
}

const startup = JSON.parse(process.argv[2] || '{}');
const parentPid = startup.parent;
delete startup.parent;
merge(config, startup);

const COUNTERS = ['imds_token', 'imds_list', 'imds_credentials', 'imds_rejected', 'container',
  'container_rejected', 'assume_role', 'assume_role_web_identity', 'sts_rejected', 'sso_role_credentials',
  'sso_rejected', 'oidc_create_token', 'oidc_rejected', 'injected_failures', 'other'];
let stats;
let log;
function reset() {
  stats = {};
  for (const c of COUNTERS) stats[c] = 0;
  log = [];
}
reset();

const tokens = new Map();  // IMDS session token -> expiry (ms)
const issued = new Map();  // AccessKeyId -> { secret, token } of temporary credentials
let seq = 0;

function issue(kind, expiresIn) {
  seq += 1;
  const id = `ASIA${kind}${String(seq).padStart(8, '0')}`;
  const secret = crypto.randomBytes(30).toString('base64');
  const token = `${kind}Token/${crypto.randomBytes(60).toString('base64')}`;
  issued.set(id, { secret, token });
  // whole seconds, as AWS writes them
  const expiration = new Date((Math.floor(Date.now() / 1000) + Number(expiresIn)) * 1000)
    .toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { id, secret, token, expiration };
}

// ------------------------------------------------------------ helpers

function send(res, status, body, type) {
  const buf = Buffer.from(body || '');
  res.writeHead(status, { 'Content-Type': type || 'text/plain', 'Content-Length': buf.length });
  res.end(buf);
}

function sendJson(res, status, value) {
  send(res, status, JSON.stringify(value), 'application/json');
}

function xmlEscape(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';

function stsError(res, status, code, message) {
  stats.sts_rejected += 1;
  const body = `<ErrorResponse xmlns="${STS_NS}">\n  <Error>\n    <Type>Sender</Type>\n` +
    `    <Code>${xmlEscape(code)}</Code>\n    <Message>${xmlEscape(message)}</Message>\n  </Error>\n` +
    `  <RequestId>${crypto.randomUUID()}</RequestId>\n</ErrorResponse>\n`;
  send(res, status, body, 'text/xml');
}

const sha256hex = (data) => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();

// RFC 3986 encoding, as SigV4's canonical query string wants it
function uriEncode(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

// Checks the SigV4 Authorization of a request. Returns null when valid, or
// [status, code, message] as STS would answer.
function verifySigV4(req, body, service) {
  const auth = req.headers.authorization;
  if (!auth) return [403, 'MissingAuthenticationToken', 'Request is missing Authentication Token'];
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, *SignedHeaders=([a-z0-9;-]+), *Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return [400, 'IncompleteSignature', 'Authorization header is malformed'];
  const [, akid, date, region, svc, signedHeaders, signature] = m;
  let secret = config.keys[akid];
  const temp = issued.get(akid);
  if (!secret && temp) {
    if (req.headers['x-amz-security-token'] !== temp.token) {
      return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
    }
    secret = temp.secret;
  }
  if (!secret) return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
  if (svc !== service) return [403, 'SignatureDoesNotMatch', `Credential should be scoped to correct service: '${service}'.`];
  if (config.sts.region && region !== config.sts.region) {
    return [403, 'SignatureDoesNotMatch', `Credential should be scoped to a valid region, not '${region}'.`];
  }
  const amzDate = req.headers['x-amz-date'] || '';
  const dm = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!dm || amzDate.slice(0, 8) !== date) return [400, 'IncompleteSignature', 'X-Amz-Date is missing or does not match the credential scope'];
  const when = Date.UTC(+dm[1], +dm[2] - 1, +dm[3], +dm[4], +dm[5], +dm[6]);
  if (Math.abs(Date.now() - when) > config.sts.max_skew_s * 1000) {
    return [403, 'SignatureDoesNotMatch', 'Signature expired: the request time is too far from the server time.'];
  }
  const names = signedHeaders.split(';');
  if (!names.includes('host')) return [403, 'SignatureDoesNotMatch', 'The host header must be signed.'];
  const canonicalHeaders = names.map((n) => {
    const v = req.headers[n];
    if (v === undefined) return null;
    return `${n}:${String(v).trim().replace(/\s+/g, ' ')}\n`;
  });
  if (canonicalHeaders.includes(null)) return [403, 'SignatureDoesNotMatch', 'A signed header is missing from the request.'];
  const [rawPath, rawQuery] = req.url.split('?');
  const query = (rawQuery || '').split('&').filter((p) => p !== '').map((p) => {
    const [k, v] = p.split('=');
    return [uriEncode(decodeURIComponent(k)), uriEncode(decodeURIComponent(v || ''))];
  }).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`).join('&');
  const canonical = [req.method, rawPath, query, canonicalHeaders.join(''), signedHeaders, sha256hex(body)].join('\n');
  const scope = `${date}/${region}/${svc}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  const kDate = hmac('AWS4' + secret, date);
  const kSigning = hmac(hmac(hmac(kDate, region), svc), 'aws4_request');
  const expected = hmac(kSigning, stringToSign).toString('hex');
  if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.'];
  }
  return null;
}

function credentialsXml(c) {
  return `    <Credentials>\n      <AccessKeyId>${c.id}</AccessKeyId>\n` +
    `      <SecretAccessKey>${xmlEscape(c.secret)}</SecretAccessKey>\n` +
    `      <SessionToken>${xmlEscape(c.token)}</SessionToken>\n` +
    `      <Expiration>${c.expiration}</Expiration>\n    </Credentials>\n`;
}

function assumedRoleXml(roleArn, session) {
  const m = /^arn:aws[\w-]*:iam::(\d{12}):role\/(.+)$/.exec(roleArn) || [null, '123456789012', 'role'];
  const roleName = m[2].split('/').pop();
  return `    <AssumedRoleUser>\n      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:${xmlEscape(session)}</AssumedRoleId>\n` +
    `      <Arn>arn:aws:sts::${m[1]}:assumed-role/${xmlEscape(roleName)}/${xmlEscape(session)}</Arn>\n    </AssumedRoleUser>\n`;
}

function handleSts(req, res, body) {
  const params = new URLSearchParams(body.toString('utf8'));
  const action = params.get('Action');
  if (params.get('Version') !== '2011-06-15') return stsError(res, 400, 'InvalidAction', 'Could not find operation with version');
  const ct = req.headers['content-type'] || '';
  if (!ct.startsWith('application/x-www-form-urlencoded')) return stsError(res, 400, 'InvalidAction', 'Unsupported content type');
  const roleArn = params.get('RoleArn');
  const session = params.get('RoleSessionName');
  if (!roleArn || !session) return stsError(res, 400, 'ValidationError', 'RoleArn and RoleSessionName are required');
  if (!/^[\w+=,.@-]{2,64}$/.test(session)) return stsError(res, 400, 'ValidationError', "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint");
  const expiresIn = params.get('DurationSeconds') || config.sts.expires_in;
  if (action === 'AssumeRole') {
    stats.assume_role += 1;
    const bad = verifySigV4(req, body, 'sts');
    if (bad) return stsError(res, bad[0], bad[1], bad[2]);
    if (config.sts.status !== 200) return stsError(res, config.sts.status, config.sts.code || 'AccessDenied', config.sts.message || 'not authorized');
    const c = issue('STS', expiresIn);
    const xml = `<AssumeRoleResponse xmlns="${STS_NS}">\n  <AssumeRoleResult>\n` +
      assumedRoleXml(roleArn, session) + credentialsXml(c) +
      `    <PackedPolicySize>6</PackedPolicySize>\n  </AssumeRoleResult>\n` +
      `  <ResponseMetadata>\n    <RequestId>${crypto.randomUUID()}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n`;
    return send(res, 200, xml, 'text/xml');
  }
  if (action === 'AssumeRoleWithWebIdentity') {
    stats.assume_role_web_identity += 1;
    if (req.headers.authorization) return stsError(res, 400, 'InvalidParameterValue', 'AssumeRoleWithWebIdentity is not signed');
    if (params.get('WebIdentityToken') !== config.sts.web_identity_token) {
      return stsError(res, 400, 'InvalidIdentityToken', "Couldn't retrieve verification key from your identity provider");
    }
    if (config.sts.status !== 200) return stsError(res, config.sts.status, config.sts.code || 'AccessDenied', config.sts.message || 'not authorized');
    const c = issue('WEB', expiresIn);
    const xml = `<AssumeRoleWithWebIdentityResponse xmlns="${STS_NS}">\n  <AssumeRoleWithWebIdentityResult>\n` +
      `    <SubjectFromWebIdentityToken>system:serviceaccount:default:test</SubjectFromWebIdentityToken>\n` +
      `    <Audience>sts.amazonaws.com</Audience>\n` + assumedRoleXml(roleArn, session) + credentialsXml(c) +
      `    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.example</Provider>\n` +
      `  </AssumeRoleWithWebIdentityResult>\n` +
      `  <ResponseMetadata>\n    <RequestId>${crypto.randomUUID()}</RequestId>\n  </ResponseMetadata>\n` +
      `</AssumeRoleWithWebIdentityResponse>\n`;
    return send(res, 200, xml, 'text/xml');
  }
  stats.other += 1;
  return stsError(res, 400, 'InvalidAction', `Could not find operation ${action}`);
}

// ------------------------------------------------------------ IMDS

const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const CREDS = '/latest/meta-data/iam/security-credentials/';

function handleImds(req, res) {
  const url = req.url.split('?')[0];
  if (url === '/latest/api/token') {
    if (req.method !== 'PUT') { stats.imds_rejected += 1; return send(res, 405, ''); }
    stats.imds_token += 1;
    if (config.imds.token_status !== 200) return send(res, config.imds.token_status, '');
    if (req.headers['x-forwarded-for']) return send(res, 403, '');
    const ttl = Number(req.headers[TTL_HEADER]);
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > config.imds.max_token_ttl) return send(res, 400, '');
    const token = crypto.randomBytes(32).toString('base64');
    tokens.set(token, Date.now() + ttl * 1000);
    res.setHeader('X-aws-ec2-metadata-token-ttl-seconds', String(ttl));
    return send(res, 200, token);
  }
  if (req.method !== 'GET') { stats.imds_rejected += 1; return send(res, 405, ''); }
  const token = req.headers[TOKEN_HEADER];
  if (token === undefined) {
    if (!config.imds.v1) { stats.imds_rejected += 1; return send(res, 401, ''); }
  } else {
    const exp = tokens.get(token);
    if (!exp || exp < Date.now()) { stats.imds_rejected += 1; return send(res, 401, ''); }
  }
  if (url === CREDS) {
    stats.imds_list += 1;
    if (!config.imds.role) return send(res, 404, '');
    return send(res, 200, config.imds.role);
  }
  if (url.startsWith(CREDS)) {
    stats.imds_credentials += 1;
    if (url.slice(CREDS.length) !== config.imds.role) return send(res, 404, '');
    if (config.imds.credentials_status !== 200) return send(res, config.imds.credentials_status, '');
    const c = issue('IMDS', config.imds.expires_in);
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    return sendJson(res, 200, {
      Code: 'Success', LastUpdated: now, Type: 'AWS-HMAC', AccessKeyId: c.id,
      SecretAccessKey: c.secret, Token: c.token, Expiration: c.expiration,
    });
  }
  stats.other += 1;
  return send(res, 404, '');
}

// ------------------------------------------------------------ container

function handleContainer(req, res) {
  stats.container += 1;
  const want = config.container.token;
  const got = req.headers.authorization;
  if (want !== null && want !== undefined) {
    if (got === undefined) {
      stats.container_rejected += 1;
      return sendJson(res, 401, { code: 'AccessDeniedException', message: 'Authorization header is missing' });
    }
    if (got !== want) {
      stats.container_rejected += 1;
      return sendJson(res, 403, { code: 'AccessDeniedException', message: 'Invalid authorization token' });
    }
  }
  if (config.container.status !== 200) {
    return sendJson(res, config.container.status, { code: 'InternalServerException', message: 'agent failure' });
  }
  const c = issue('ECS', config.container.expires_in);
  return sendJson(res, 200, {
    RoleArn: 'arn:aws:iam::123456789012:role/container-role', AccessKeyId: c.id,
    SecretAccessKey: c.secret, Token: c.token, Expiration: c.expiration,
  });
}

// ------------------------------------------------------------ IAM Identity Center

// restJson1 errors as the SSO services send them: the code in
// x-amzn-ErrorType, the text in `message` (OIDC adds error/error_description)
function ssoError(res, status, code, message, extra) {
  const body = Object.assign({ message }, extra || {});
  const buf = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': buf.length,
    'x-amzn-ErrorType': code, 'x-amzn-RequestId': crypto.randomUUID() });
  res.end(buf);
}

function handlePortal(req, res) {
  stats.sso_role_credentials += 1;
  const q = new URL(req.url, 'http://x').searchParams;
  const token = req.headers['x-amz-sso_bearer_token'];
  // an empty Lua table arrives as {}: no valid tokens
  if (!Array.isArray(config.sso.access_tokens)) config.sso.access_tokens = [];
  if (!token || !config.sso.access_tokens.includes(token)) {
    stats.sso_rejected += 1;
    const quote = config.sso.echo ? ` (${token})` : '';
    return ssoError(res, 401, 'UnauthorizedException', `Session token not found or invalid${quote}`);
  }
  if (q.get('account_id') !== config.sso.account_id || q.get('role_name') !== config.sso.role_name) {
    stats.sso_rejected += 1;
    return ssoError(res, 403, 'ForbiddenException', 'No access');
  }
  const c = issue('SSO', config.sso.expires_in);
  return sendJson(res, 200, { roleCredentials: {
    accessKeyId: c.id, secretAccessKey: c.secret, sessionToken: c.token,
    expiration: Date.parse(c.expiration),
  } });
}

function handleOidc(req, res, body) {
  stats.oidc_create_token += 1;
  let doc;
  try { doc = JSON.parse(body.toString('utf8')); } catch (e) { doc = null; }
  const o = config.oidc;
  const quote = o.echo && doc ? ` (client secret ${doc.clientSecret}, refresh token ${doc.refreshToken})` : '';
  if (!doc || doc.grantType !== 'refresh_token') {
    stats.oidc_rejected += 1;
    return ssoError(res, 400, 'UnsupportedGrantTypeException', 'grantType must be refresh_token',
      { error: 'unsupported_grant_type' });
  }
  if (doc.clientId !== o.client_id || doc.clientSecret !== o.client_secret) {
    stats.oidc_rejected += 1;
    return ssoError(res, 401, 'InvalidClientException', `Invalid client${quote}`, { error: 'invalid_client' });
  }
  if (doc.refreshToken !== o.refresh_token) {
    stats.oidc_rejected += 1;
    return ssoError(res, 400, 'InvalidGrantException', `Invalid refresh token${quote}`, { error: 'invalid_grant' });
  }
  seq += 1;
  const accessToken = `ssoAccess${seq}/${crypto.randomBytes(24).toString('base64')}`;
  if (!Array.isArray(config.sso.access_tokens)) config.sso.access_tokens = [];
  config.sso.access_tokens.push(accessToken);
  const out = { accessToken, expiresIn: o.expires_in, tokenType: 'Bearer' };
  if (o.rotate) {
    out.refreshToken = `ssoRefresh${seq}/${crypto.randomBytes(24).toString('base64')}`;
    o.refresh_token = out.refreshToken;
  }
  return sendJson(res, 200, out);
}

// ------------------------------------------------------------ server

// The kind of API a request is for (for fail_next), or null.
function kindOf(req) {
  const p = req.url.split('?')[0];
  if (p.startsWith('/latest/')) return 'imds';
  if (p === config.container.path) return 'container';
  if (p === '/federation/credentials') return 'sso';
  if (p === '/token') return 'oidc';
  if (req.method === 'POST' && p === '/') return 'sts';
  return null;
}

function control(req, res, body) {
  const what = req.url.slice('/__meta/'.length);
  if (what === 'stats' && req.method === 'GET') return sendJson(res, 200, stats);
  if (what === 'requests' && req.method === 'GET') return sendJson(res, 200, log);
  if (what === 'config' && req.method === 'GET') return sendJson(res, 200, config);
  if (what === 'config' && req.method === 'POST') {
    merge(config, JSON.parse(body.toString('utf8') || '{}'));
    return sendJson(res, 200, config);
  }
  if (what === 'reset' && req.method === 'POST') { reset(); return sendJson(res, 200, {}); }
  if (what === 'revoke' && req.method === 'POST') {
    const n = tokens.size;
    tokens.clear();
    return sendJson(res, 200, { revoked: n });
  }
  return sendJson(res, 404, { error: `unknown control ${req.method} ${req.url}` });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    try {
      if (req.url.startsWith('/__meta/')) return control(req, res, body);
      log.push({ method: req.method, path: req.url, headers: req.headers, body: body.toString('utf8') });
      const kind = kindOf(req);
      if (kind && config.fail_next[kind] > 0) {
        config.fail_next[kind] -= 1;
        stats.injected_failures += 1;
        if (kind === 'sts') return stsError(res, 500, 'InternalFailure', 'injected failure');
        return sendJson(res, 500, { code: 'InternalFailure', message: 'injected failure' });
      }
      if (kind === 'sso' && req.method === 'GET') return handlePortal(req, res);
      if (kind === 'oidc' && req.method === 'POST') return handleOidc(req, res, body);
      if (req.url.startsWith('/latest/')) {
        if (config.imds.delay_ms > 0) return setTimeout(() => handleImds(req, res), config.imds.delay_ms);
        return handleImds(req, res);
      }
      if (req.url.split('?')[0] === config.container.path) return handleContainer(req, res);
      if (req.method === 'POST' && req.url.split('?')[0] === '/') return handleSts(req, res, body);
      stats.other += 1;
      return send(res, 404, 'not found');
    } catch (e) {
      process.stderr.write(String(e && e.stack || e) + '\n');
      return send(res, 500, 'metadata.js: ' + e.message);
    }
  });
});

server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ pid: process.pid, port: server.address().port }) + '\n');
});

process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});

if (parentPid) {
  setInterval(() => {
    try { process.kill(parentPid, 0); } catch (e) { process.exit(0); }
  }, 1000).unref();
}
