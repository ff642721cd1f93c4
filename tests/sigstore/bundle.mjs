#!/usr/bin/env node
// Test helper for layerguard: make and check keyed Sigstore bundle v0.3 files
// (DSSE envelope around an in-toto Statement v1) for container images.
// Offline only: a local ECDSA P-256 key, no Fulcio, no Rekor, no TSA.
//
//   node bundle.mjs sign   --key KEY.pem --digest sha256:<64hex> --name <image ref> [--out FILE] [--hint STR]
//   node bundle.mjs verify --pub PUB.pem --bundle FILE --digest sha256:<64hex>
//
// Exit codes: 0 ok, 1 signing/verification failed, 2 bad usage.
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import {
  BUNDLE_V03_MEDIA_TYPE,
  bundleFromJSON,
  bundleToJSON,
  isBundleWithDsseEnvelope,
} from '@sigstore/bundle';
import { DSSEBundleBuilder } from '@sigstore/sign';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const PREDICATE_TYPE = 'https://sigstore.dev/cosign/sign/v1';
const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

class UsageError extends Error {}

function parseDigest(s) {
  const m = DIGEST_RE.exec(s ?? '');
  if (!m) throw new UsageError(`--digest must be sha256:<64 lowercase hex>, got ${JSON.stringify(s)}`);
  return m[1];
}

function need(values, ...names) {
  for (const n of names) {
    if (values[n] === undefined) throw new UsageError(`missing --${n}`);
  }
}

function assertP256(key, what) {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error(`${what} is not an EC P-256 key (got ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? ''})`);
  }
}

// Key hint = base64(sha256(SPKI DER)), the same fingerprint sigstore-go (and so
// cosign v3) uses for verificationMaterial.publicKey.hint.
function keyHint(publicKey) {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

async function cmdSign(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      key: { type: 'string' },
      digest: { type: 'string' },
      name: { type: 'string' },
      out: { type: 'string' },
      hint: { type: 'string' },
    },
    strict: true,
  });
  need(values, 'key', 'digest', 'name');
  const hex = parseDigest(values.digest);

  // createPrivateKey accepts SEC1 ("BEGIN EC PRIVATE KEY", with or without a
  // leading "BEGIN EC PARAMETERS" block) and PKCS#8 ("BEGIN PRIVATE KEY").
  const privateKey = createPrivateKey(readFileSync(values.key));
  assertP256(privateKey, values.key);
  const publicKey = createPublicKey(privateKey);
  const hint = values.hint ?? keyHint(publicKey);
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' });

  // @sigstore/sign Signer: it hands us the DSSE PAE bytes; we return an
  // ASN.1/DER ECDSA-SHA256 signature over them.
  const signer = {
    sign: async (data) => ({
      signature: sign('sha256', data, privateKey),
      key: { $case: 'publicKey', publicKey: publicKeyPem, hint },
    }),
  };

  const statement = {
    _type: STATEMENT_TYPE,
    subject: [{ name: values.name, digest: { sha256: hex } }],
    predicateType: PREDICATE_TYPE,
    predicate: {},
  };

  const builder = new DSSEBundleBuilder({ signer, witnesses: [] });
  const bundle = await builder.create({
    data: Buffer.from(JSON.stringify(statement)),
    type: PAYLOAD_TYPE,
  });
  if (bundle.mediaType !== BUNDLE_V03_MEDIA_TYPE) {
    throw new Error(`unexpected bundle mediaType ${bundle.mediaType}`);
  }

  const text = JSON.stringify(bundleToJSON(bundle)) + '\n';
  if (values.out) writeFileSync(values.out, text);
  else process.stdout.write(text);
}

function cmdVerify(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      pub: { type: 'string' },
      bundle: { type: 'string' },
      digest: { type: 'string' },
    },
    strict: true,
  });
  need(values, 'pub', 'bundle', 'digest');
  const hex = parseDigest(values.digest);

  const publicKey = createPublicKey(readFileSync(values.pub));
  assertP256(publicKey, values.pub);

  // bundleFromJSON also validates the bundle structure (@sigstore/bundle).
  const bundle = bundleFromJSON(JSON.parse(readFileSync(values.bundle, 'utf8')));
  if (bundle.mediaType !== BUNDLE_V03_MEDIA_TYPE) {
    throw new Error(`bundle mediaType is ${bundle.mediaType}, want ${BUNDLE_V03_MEDIA_TYPE}`);
  }
  if (!isBundleWithDsseEnvelope(bundle)) {
    throw new Error('bundle content is not a DSSE envelope');
  }
  if (bundle.verificationMaterial.content.$case !== 'publicKey') {
    throw new Error(`verificationMaterial is ${bundle.verificationMaterial.content.$case}, want publicKey`);
  }

  // Trust material: no CAs, no tlogs, no ctlogs, no TSAs; the key selector
  // returns the given public key whatever the hint says (like `cosign verify --key`).
  const emptyRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  };
  const keySelector = () => ({ publicKey, validFor: () => true });
  const trust = toTrustMaterial(emptyRoot, keySelector);
  const verifier = new Verifier(trust, {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
    tsaThreshold: 0, // deprecated alias of timestampThreshold in @sigstore/verify 3.x
  });
  verifier.verify(toSignedEntity(bundle));

  // The signature is good; now check what was signed.
  const env = bundle.content.dsseEnvelope;
  if (env.payloadType !== PAYLOAD_TYPE) {
    throw new Error(`DSSE payloadType is ${JSON.stringify(env.payloadType)}, want ${PAYLOAD_TYPE}`);
  }
  let statement;
  try {
    statement = JSON.parse(Buffer.from(env.payload).toString('utf8'));
  } catch (e) {
    throw new Error(`DSSE payload is not JSON: ${e.message}`);
  }
  if (statement?._type !== STATEMENT_TYPE) {
    throw new Error(`statement _type is ${JSON.stringify(statement?._type)}, want ${STATEMENT_TYPE}`);
  }
  const subjects = Array.isArray(statement.subject) ? statement.subject : [];
  if (!subjects.some((s) => s?.digest?.sha256 === hex)) {
    const got = subjects.map((s) => s?.digest?.sha256).join(', ') || 'none';
    throw new Error(`statement subject digest mismatch: want sha256:${hex}, got ${got}`);
  }
  process.stdout.write('verified\n');
}

const USAGE = `usage:
  node bundle.mjs sign   --key KEY.pem --digest sha256:<64hex> --name <image ref> [--out FILE] [--hint STR]
  node bundle.mjs verify --pub PUB.pem --bundle FILE --digest sha256:<64hex>
`;

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  try {
    if (cmd === 'sign') await cmdSign(rest);
    else if (cmd === 'verify') cmdVerify(rest);
    else throw new UsageError(cmd ? `unknown subcommand ${cmd}` : 'missing subcommand');
  } catch (e) {
    const usage = e instanceof UsageError || e?.code?.startsWith?.('ERR_PARSE_ARGS');
    const fields = Array.isArray(e?.fields) ? ` (${e.fields.join(', ')})` : ''; // @sigstore/bundle ValidationError
    process.stderr.write(`error: ${e?.message ?? e}${fields}\n`);
    if (usage) process.stderr.write(USAGE);
    process.exit(usage ? 2 : 1);
  }
}

await main();
