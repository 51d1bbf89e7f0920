#!/usr/bin/env node
// SPDX-License-Identifier: MIT OR Apache-2.0
/**
 * Palisade test OpenID provider: a real `oidc-provider` (panva) instance shaped
 * like a Keycloak realm, for integration tests that need an actual issuer,
 * discovery document, JWKS and signed JWT access tokens.
 *
 * ─── Setup ──────────────────────────────────────────────────────────────────
 *   cd tests/oidc && npm ci --no-audit --no-fund     # or: npm install --no-audit --no-fund
 *   node provider.mjs --port 0 --keys-file /tmp/keys.json
 *
 * Runs on Node.js >= 20.18 (oidc-provider 9.13.x prints one "Unsupported
 * runtime" WARNING on stderr under Node 20; it works regardless, no flags needed).
 *
 * ─── Interface (argv wins over env; argv accepts `--x v` and `--x=v`) ───────
 *   --port N              PORT          TCP port on 127.0.0.1 (always loopback).
 *                                       0 (default) = pick a free port; the real
 *                                       port is in the ready line.
 *   --realm NAME          REALM         realm name, default "palisade".
 *   --keys-file PATH      KEYS_FILE     private JWKS {"keys":[...]}. If PATH does not
 *                                       exist, a fresh set is generated and written
 *                                       there (mode 0600). If unset, a fresh set is
 *                                       generated in memory only.
 *   --key-generation N    KEY_GENERATION  only used when generating keys: kids get the
 *                                       suffix N (rs-N, es-N, ed-N, enc-N); default 1.
 *                                       Handy for rotation tests (new file + new kids).
 *   --clients-file PATH   CLIENTS_FILE  JSON personas (an array, or {"clients":[...]});
 *                                       default: DEFAULT_PERSONAS below.
 *   --exit-on-stdin-close EXIT_ON_STDIN_CLOSE=1  exit when stdin reaches EOF, so that a
 *                                       test harness that spawns us with a piped stdin
 *                                       never leaves an orphan (Rust's Child does not
 *                                       kill on drop). Off by default: CI has no stdin.
 *
 * Generated keys (as Keycloak publishes them; all four appear in the JWKS):
 *   rs-1  RSA 2048  use=sig alg=RS256
 *   es-1  EC P-256  use=sig alg=ES256
 *   ed-1  Ed25519   use=sig alg=EdDSA
 *   enc-1 RSA 2048  use=enc alg=RSA-OAEP
 *
 * On success exactly ONE line goes to stdout (everything else goes to stderr):
 *   oidc-provider ready issuer=http://127.0.0.1:<port>/realms/<realm> port=<port>
 * SIGTERM / SIGINT exit with status 0.
 *
 * ─── Endpoints (Keycloak paths) ─────────────────────────────────────────────
 *   issuer     http://127.0.0.1:<port>/realms/<realm>
 *   discovery  <issuer>/.well-known/openid-configuration
 *   jwks_uri   <issuer>/protocol/openid-connect/certs        (public keys only)
 *   token      <issuer>/protocol/openid-connect/token
 * No introspection / revocation endpoint: oidc-provider refuses to introspect
 * or revoke JWT access tokens, so those features are switched off (and not
 * advertised). authorization/userinfo are advertised but unusable (no login UI).
 *
 * ─── Getting a token ────────────────────────────────────────────────────────
 * client_credentials grant; no `scope` and no `resource` parameter are needed
 * (every persona gets a default resource that yields a JWT access token).
 *
 *   # client_secret_basic
 *   curl -s -u api-user:api-user-secret \
 *        -d grant_type=client_credentials \
 *        http://127.0.0.1:$PORT/realms/palisade/protocol/openid-connect/token
 *
 *   # client_secret_post (equally accepted for every persona)
 *   curl -s -d grant_type=client_credentials -d client_id=api-user \
 *        -d client_secret=api-user-secret \
 *        http://127.0.0.1:$PORT/realms/palisade/protocol/openid-connect/token
 *
 *   => {"access_token":"eyJ...","expires_in":300,"token_type":"Bearer","scope":"profile email"}
 *
 * Optional `scope=...`: values listed in the persona's `optional_scope` are added
 * to its default `scope`; unknown values are silently dropped. A `resource`
 * parameter is not needed; any value other than the persona's own
 * (urn:palisade:persona:<client_id>) is rejected with invalid_target.
 *
 * ─── Access token shape (Keycloak-like) ─────────────────────────────────────
 *   header  {"alg":"RS256|ES256|EdDSA","typ":"JWT","kid":"rs-1"}
 *   payload exp iat auth_time jti iss [aud] sub typ="Bearer" azp sid acr amr
 *           realm_access{roles} resource_access{<client>{roles}} scope client_id
 *           preferred_username="service-account-<client>" [org_id] [team_id]
 * `aud` is emitted exactly as configured (string or array) and omitted when the
 * persona's `aud` is null/absent. `jti` and `sid` are fresh UUIDs per token.
 *
 * ─── Persona (client) fields ────────────────────────────────────────────────
 *   client_id      required
 *   client_secret  default "<client_id>-secret"
 *   aud            string | string[] | null (null/absent: no aud claim)
 *   alg            "RS256" (default) | "ES256" | "EdDSA" (any alg present in the keys)
 *   kid            optional: pin a specific signing key
 *   typ            JWT header typ, default "JWT" (use "at+jwt" for RFC 9068 style)
 *   realm_roles    default []                   -> realm_access.roles
 *   client_roles   string[] (for this client) or {client: string[]} -> resource_access
 *   acr            default "1";   amr  default ["pwd"] (null omits)
 *   org_id/team_id optional strings (null/absent: claim omitted)
 *   scope          default granted scopes, default "profile email"
 *   optional_scope extra scopes a request may ask for, default "openid"
 *   ttl            access-token lifetime in seconds, default 300 (Keycloak default)
 *   sub            default: a UUID derived from client_id (stable across restarts)
 *   claims         object merged last into the payload (a null value deletes a
 *                  claim), e.g. {"exp": 1000000000} for an already-expired token.
 */

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

// stdout carries exactly one line (the ready line). oidc-provider prints its
// NOTICEs with console.info, so route console.info/log to stderr *before*
// the library is loaded (hence the dynamic import below).
console.log = console.error;
console.info = console.error;

const { default: Provider, errors: oidcErrors } = await import('oidc-provider');

// ─── Configuration ──────────────────────────────────────────────────────────

const { values: argv } = parseArgs({
  options: {
    port: { type: 'string' },
    realm: { type: 'string' },
    'keys-file': { type: 'string' },
    'key-generation': { type: 'string' },
    'clients-file': { type: 'string' },
    'exit-on-stdin-close': { type: 'boolean' },
  },
  strict: true,
  allowPositionals: false,
});

const env = process.env;
const cfg = {
  port: Number(argv.port ?? env.PORT ?? 0),
  realm: argv.realm ?? env.REALM ?? 'palisade',
  keysFile: argv['keys-file'] ?? env.KEYS_FILE ?? undefined,
  keyGeneration: argv['key-generation'] ?? env.KEY_GENERATION ?? '1',
  clientsFile: argv['clients-file'] ?? env.CLIENTS_FILE ?? undefined,
  exitOnStdinClose: argv['exit-on-stdin-close'] ?? ['1', 'true'].includes(env.EXIT_ON_STDIN_CLOSE ?? ''),
};

function die(msg) {
  process.stderr.write(`oidc-provider error: ${msg}\n`);
  process.exit(1);
}

if (!Number.isInteger(cfg.port) || cfg.port < 0 || cfg.port > 65535) die(`bad port ${cfg.port}`);
if (!/^[A-Za-z0-9._-]+$/.test(cfg.realm)) die(`bad realm name ${JSON.stringify(cfg.realm)}`);
if (!/^[A-Za-z0-9._-]+$/.test(cfg.keyGeneration)) die(`bad key generation ${cfg.keyGeneration}`);

// Built-in personas (used when no CLIENTS_FILE is given).
const DEFAULT_PERSONAS = [
  // Plain API caller, the baseline: RS256, single audience (Keycloak emits a
  // single audience as a string).
  {
    client_id: 'api-user', aud: 'api', alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  // Same persona, other signature algorithms.
  {
    client_id: 'api-user-es', aud: 'api', alg: 'ES256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  {
    client_id: 'api-user-ed', aud: 'api', alg: 'EdDSA',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  // Audience as an array with more than one entry.
  {
    client_id: 'multi-aud', aud: ['api', 'account'], alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  // Keycloak without an audience mapper: no aud claim at all.
  {
    client_id: 'no-aud', aud: null, alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  // Global admins, with and without a second factor.
  {
    client_id: 'admin-mfa', aud: 'global-admin', alg: 'RS256',
    realm_roles: ['member', 'admin', 'impersonator'], client_roles: ['admin'],
    acr: '2', amr: ['pwd', 'otp'], org_id: 'org-1', team_id: 'team-1',
  },
  {
    client_id: 'admin-no-mfa', aud: 'global-admin', alg: 'RS256',
    realm_roles: ['member', 'admin', 'impersonator'], client_roles: ['admin'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
  },
  // Organisation admin (scoped to org-1).
  {
    client_id: 'org-admin', aud: 'org-admin', alg: 'RS256',
    realm_roles: ['member', 'org-admin', 'impersonator'], client_roles: ['org-admin'],
    acr: '2', amr: ['pwd', 'otp'], org_id: 'org-1', team_id: 'team-1',
    claims: { groups: ['/orgs/org-1/admin'] },
  },
  // Document users (authorization tour): a member of org-1 and an admin of org-2, as
  // Keycloak group paths (group membership mapper, full path); without and with MFA.
  {
    client_id: 'docs-user', aud: 'api', alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-1', team_id: 'team-1',
    claims: { groups: ['/orgs/org-1/member', '/orgs/org-2/admin'] },
  },
  {
    client_id: 'docs-user-mfa', aud: 'api', alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '2', amr: ['pwd', 'otp'], org_id: 'org-1', team_id: 'team-1',
    claims: { groups: ['/orgs/org-1/member', '/orgs/org-2/admin'] },
  },
  // Same rights as api-user, but in another tenant.
  {
    client_id: 'other-tenant', aud: 'api', alg: 'RS256',
    realm_roles: ['member'], client_roles: ['reader'],
    acr: '1', amr: ['pwd'], org_id: 'org-2', team_id: 'team-9',
  },
];

// A stable UUID (v5-shaped, SHA-1 of realm + client id) for the service-account `sub`.
function stableUuid(name) {
  const h = crypto.createHash('sha1').update(`palisade-test:${cfg.realm}:${name}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function normalizePersona(raw, i) {
  if (!raw || typeof raw.client_id !== 'string' || !raw.client_id) {
    die(`clients[${i}] needs a non-empty string client_id`);
  }
  const id = raw.client_id;
  const aud = raw.aud ?? null;
  if (!(aud === null || (typeof aud === 'string' && aud) || (Array.isArray(aud) && aud.length && aud.every((a) => typeof a === 'string' && a)))) {
    die(`client ${id}: aud must be a non-empty string, a non-empty string array, or null`);
  }
  let clientRoles = raw.client_roles ?? [];
  if (Array.isArray(clientRoles)) clientRoles = clientRoles.length ? { [id]: clientRoles } : {};
  const ttl = raw.ttl ?? 300;
  if (!Number.isSafeInteger(ttl) || ttl <= 0) die(`client ${id}: ttl must be a positive integer`);
  return {
    client_id: id,
    client_secret: raw.client_secret ?? `${id}-secret`,
    aud,
    alg: raw.alg ?? 'RS256',
    kid: raw.kid,
    typ: raw.typ ?? 'JWT',
    realm_roles: raw.realm_roles ?? [],
    client_roles: clientRoles,
    acr: raw.acr ?? '1',
    amr: raw.amr === undefined ? ['pwd'] : raw.amr,
    org_id: raw.org_id ?? null,
    team_id: raw.team_id ?? null,
    scope: raw.scope ?? 'profile email',
    optional_scope: raw.optional_scope ?? 'openid',
    ttl,
    sub: raw.sub ?? stableUuid(id),
    claims: raw.claims ?? {},
  };
}

function loadPersonas() {
  let list = DEFAULT_PERSONAS;
  if (cfg.clientsFile) {
    let parsed;
    try {
      parsed = JSON.parse(fs.readFileSync(cfg.clientsFile, 'utf8'));
    } catch (e) {
      die(`cannot read CLIENTS_FILE ${cfg.clientsFile}: ${e.message}`);
    }
    list = Array.isArray(parsed) ? parsed : parsed?.clients;
    if (!Array.isArray(list)) die('CLIENTS_FILE must hold an array or {"clients":[...]}');
  }
  const map = new Map();
  list.forEach((raw, i) => {
    const p = normalizePersona(raw, i);
    if (map.has(p.client_id)) die(`duplicate client_id ${p.client_id}`);
    map.set(p.client_id, p);
  });
  return map;
}

// ─── Keys ───────────────────────────────────────────────────────────────────

function generateKeys(gen) {
  const jwk = (kid, use, alg, type, opts) => {
    const { privateKey } = crypto.generateKeyPairSync(type, opts);
    return { kid, use, alg, ...privateKey.export({ format: 'jwk' }) };
  };
  return {
    keys: [
      jwk(`rs-${gen}`, 'sig', 'RS256', 'rsa', { modulusLength: 2048 }),
      jwk(`es-${gen}`, 'sig', 'ES256', 'ec', { namedCurve: 'P-256' }),
      jwk(`ed-${gen}`, 'sig', 'EdDSA', 'ed25519'),
      jwk(`enc-${gen}`, 'enc', 'RSA-OAEP', 'rsa', { modulusLength: 2048 }),
    ],
  };
}

function loadOrCreateKeys() {
  if (cfg.keysFile && fs.existsSync(cfg.keysFile)) {
    try {
      const jwks = JSON.parse(fs.readFileSync(cfg.keysFile, 'utf8'));
      if (!Array.isArray(jwks?.keys) || !jwks.keys.length) throw new Error('no "keys" array');
      return jwks;
    } catch (e) {
      return die(`cannot read KEYS_FILE ${cfg.keysFile}: ${e.message}`);
    }
  }
  const jwks = generateKeys(cfg.keyGeneration);
  if (cfg.keysFile) {
    // Write atomically so a concurrently starting reader never sees half a file.
    fs.mkdirSync(path.dirname(path.resolve(cfg.keysFile)), { recursive: true });
    const tmp = `${cfg.keysFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
    fs.renameSync(tmp, cfg.keysFile);
  }
  return jwks;
}

// ─── Provider ───────────────────────────────────────────────────────────────

const personas = loadPersonas();
const jwks = loadOrCreateKeys();

for (const p of personas.values()) {
  const ok = jwks.keys.some((k) => k.use !== 'enc' && k.alg === p.alg && (p.kid === undefined || k.kid === p.kid));
  if (!ok) die(`client ${p.client_id}: no signing key with alg ${p.alg}${p.kid ? ` and kid ${p.kid}` : ''} in the key set`);
}

const resourceFor = (clientId) => `urn:palisade:persona:${clientId}`;
const splitScope = (s) => (s ? s.split(' ').filter(Boolean) : []);

function buildProvider(issuer) {
  const configuration = {
    jwks,
    clients: [...personas.values()].map((p) => ({
      client_id: p.client_id,
      client_secret: p.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      // client_secret_post is accepted for such clients as well (oidc-provider
      // treats basic and post as interchangeable).
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    // Only needed to silence a warning; no interactive flows are served.
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Both would refuse JWT access tokens anyway ("Structured JWT Tokens
      // cannot be introspected/revoked"), so don't advertise them.
      introspection: { enabled: false },
      revocation: { enabled: false },
      // Required for the RSA-OAEP "enc" key to be accepted into (and
      // published by) the keystore; nothing is actually encrypted.
      encryption: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Every token request gets the persona's resource -> JWT format.
        defaultResource: async (_ctx, client) => resourceFor(client.clientId),
        getResourceServerInfo: async (ctx, resourceIndicator, client) => {
          const p = personas.get(client.clientId);
          if (!p || resourceIndicator !== resourceFor(p.client_id)) {
            throw new oidcErrors.InvalidTarget('unknown resource indicator');
          }
          // Keycloak semantics: default scopes are always granted, optional
          // ones when requested. Inject the defaults into the request so that
          // both the token and the token response carry them.
          if (ctx.oidc?.params?.grant_type === 'client_credentials') {
            const granted = new Set([...splitScope(p.scope), ...splitScope(ctx.oidc.params.scope)]);
            ctx.oidc.params.scope = [...granted].join(' ') || undefined;
          }
          return {
            scope: [...splitScope(p.scope), ...splitScope(p.optional_scope)].join(' '),
            // Must be a string here; the real (string/array/absent) aud is set
            // by the customizer below.
            audience: Array.isArray(p.aud) ? p.aud[0] : (p.aud ?? p.client_id),
            accessTokenTTL: p.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: p.alg, ...(p.kid ? { kid: p.kid } : {}) } },
          };
        },
      },
    },
    formats: {
      customizers: {
        // Re-shape the RFC 9068 token oidc-provider builds into a Keycloak one.
        jwt: async (_ctx, token, jwt) => {
          const p = personas.get(token.clientId);
          if (!p) return;
          const base = jwt.payload;
          const payload = {
            exp: base.exp,
            iat: base.iat,
            auth_time: base.iat,
            jti: crypto.randomUUID(),
            iss: base.iss,
            aud: p.aud ?? undefined,
            sub: p.sub,
            typ: 'Bearer',
            azp: p.client_id,
            sid: crypto.randomUUID(),
            acr: p.acr,
            amr: p.amr ?? undefined,
            realm_access: { roles: [...p.realm_roles] },
            resource_access: Object.fromEntries(
              Object.entries(p.client_roles).map(([c, roles]) => [c, { roles: [...roles] }]),
            ),
            scope: base.scope ?? '',
            client_id: p.client_id,
            preferred_username: `service-account-${p.client_id}`,
            org_id: p.org_id ?? undefined,
            team_id: p.team_id ?? undefined,
          };
          for (const [k, v] of Object.entries(p.claims)) {
            if (v === null) delete payload[k];
            else payload[k] = v;
          }
          for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];

          if (payload.aud === undefined) {
            // oidc-provider refuses JWT access tokens without an audience
            // (checked right after this customizer). Keep a truthy but
            // non-enumerable `aud` so the check passes while JSON.stringify
            // - and therefore the signed token - leaves it out.
            Object.defineProperty(payload, 'aud', {
              value: p.client_id, enumerable: false, writable: true, configurable: true,
            });
          }
          jwt.payload = payload;
          // Default header typ is "at+jwt"; Keycloak uses "JWT". Overridable per persona.
          jwt.header = { typ: p.typ };
        },
      },
    },
    routes: {
      authorization: '/protocol/openid-connect/auth',
      end_session: '/protocol/openid-connect/logout',
      jwks: '/protocol/openid-connect/certs',
      token: '/protocol/openid-connect/token',
      userinfo: '/protocol/openid-connect/userinfo',
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
      Grant: 600,
      Interaction: 600,
      Session: 600,
      IdToken: 300,
    },
  };

  const provider = new Provider(issuer, configuration);
  // Surface server-side failures (e.g. a customizer bug) on stderr.
  provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc-provider server_error: ${err.stack}\n`));
  return provider;
}

// ─── HTTP server ────────────────────────────────────────────────────────────

const prefix = `/realms/${cfg.realm}`;
let callback = null; // set once the provider exists (needs the bound port)

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  const inRealm = url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`);
  if (!callback || !inRealm) {
    res.writeHead(callback ? 404 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: callback ? 'not_found' : 'starting' }));
    return;
  }
  // Mount under /realms/<realm>: oidc-provider derives its mount path from
  // req.originalUrl vs req.url (same convention as express' app.use(prefix, ...)).
  req.originalUrl = url;
  req.url = url.slice(prefix.length) || '/';
  if (req.url.startsWith('?')) req.url = `/${req.url}`;
  callback(req, res);
});

server.on('error', (e) => die(`listen failed: ${e.message}`));
server.listen(cfg.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}${prefix}`;
  let provider;
  try {
    provider = buildProvider(issuer);
  } catch (e) {
    die(`provider configuration rejected: ${e.stack}`);
  }
  callback = provider.callback();
  process.stdout.write(`oidc-provider ready issuer=${issuer} port=${port}\n`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

if (cfg.exitOnStdinClose) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
