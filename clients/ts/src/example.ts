// TypeScript client example for the imagesearch gateway: ingests one image, finds it again with a text
// search, shows how error statuses come back (a search with neither text nor image, a call with a wrong
// API key) and deletes the asset.
//
//   npm run build && node dist/clients/ts/src/example.js --addr 127.0.0.1:50051 --api-key "$IMAGESEARCH_API_KEY"
//
// Messages and the service descriptor come from protoc-gen-es (gen/ts); Connect's gRPC transport speaks
// plain gRPC over HTTP/2, so the gateway needs nothing Connect-specific. Every step prints one JSON line on
// stdout and a readable line on stderr. Exit status: 0 when every step behaved as the contract says, 1 when
// one did not, 2 for bad arguments.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { deflateSync } from "node:zlib";

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { GatewayService, IngestOutcome } from "../../../gen/ts/imagesearch/v1/gateway_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { IngestRequestSchema } from "../../../gen/ts/imagesearch/v1/gateway_pb.js";

interface Step {
  step: string;
  code: string;
  message?: string;
  request_id?: string;
  ok: boolean; // the step behaved as the contract says
  asset_id?: string;
  outcome?: string;
  found?: boolean;
  rank?: number;
  results?: number;
  degraded?: boolean;
}

// Connect names codes in camel case ("InvalidArgument"); print the gRPC spelling every other client uses.
function codeName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

let failed = false;

function report(s: Step, err?: unknown, trailers?: Headers): void {
  if (err !== undefined) {
    const ce = ConnectError.from(err);
    s.code = codeName(ce.code);
    s.message = ce.rawMessage;
    trailers = ce.metadata; // on errors Connect merges the response headers and trailers here
  }
  const rid = trailers?.get("x-request-id");
  if (rid) s.request_id = rid;
  if (!s.ok) failed = true;
  // Fixed key order (the same as the other languages' output) makes the lines easy to diff.
  const ordered = {
    step: s.step, code: s.code, message: s.message || undefined, request_id: s.request_id, ok: s.ok,
    asset_id: s.asset_id, outcome: s.outcome, found: s.found, rank: s.rank || undefined,
    results: s.results, degraded: s.degraded || undefined,
  };
  console.log(JSON.stringify(ordered));
  const verdict = s.ok ? "ok" : "UNEXPECTED";
  console.error(`[${verdict}] ${s.step.padEnd(16)} ${s.code} ${s.message ?? ""} (request id "${s.request_id ?? ""}")`);
}

class Example {
  constructor(
    private readonly client: Client<typeof GatewayService>,
    private readonly apiKey: string,
    private readonly timeoutMs: number,
  ) {}

  // Every call carries `authorization: Bearer <key>` metadata and a deadline.
  private options(key: string = this.apiKey, onTrailer?: (t: Headers) => void) {
    return { headers: { authorization: `Bearer ${key}` }, timeoutMs: this.timeoutMs, onTrailer };
  }

  async ingest(assetId: string, nonce: string, image: Uint8Array, license: string): Promise<void> {
    const s: Step = { step: "ingest", code: "OK", ok: false, asset_id: assetId };
    let trailers: Headers | undefined;
    const request: MessageInitShape<typeof IngestRequestSchema> = {
      assetId,
      image,
      uri: `example://clients/ts/${assetId}.png`,
      caption: "a red sailing boat on a calm blue lake",
      tags: ["boat", "sailing", "lake", "example", nonce],
      owner: "clients-example",
      license: { name: license },
      source: "clients/ts",
    };
    // Ingest is a bidirectional stream: one acknowledgement per request, sent after the asset is stored.
    async function* requests(): AsyncGenerator<MessageInitShape<typeof IngestRequestSchema>> {
      yield request;
    }
    try {
      s.message = "the stream ended without an acknowledgement";
      for await (const resp of this.client.ingest(requests(), this.options(undefined, (t) => (trailers = t)))) {
        s.outcome = `INGEST_OUTCOME_${IngestOutcome[resp.outcome]}`;
        s.message = undefined;
        s.ok = [IngestOutcome.CREATED, IngestOutcome.UPDATED, IngestOutcome.UNCHANGED].includes(resp.outcome);
        if (resp.error) {
          s.message = `item error ${codeName(resp.error.code as Code)}: ${resp.error.message}`;
        } else if (resp.duplicateOf) {
          s.message = `duplicate of ${resp.duplicateOf}`;
        }
      }
      report(s, undefined, trailers);
    } catch (err) {
      s.ok = false;
      report(s, err);
    }
  }

  // With deferred analysis (the gateway's default) an acknowledged image becomes searchable once its
  // safety analysis is done, seconds later: search until it is there, for up to 30 s.
  async search(assetId: string, query: string): Promise<void> {
    const s: Step = { step: "search", code: "OK", ok: false, asset_id: assetId };
    let trailers: Headers | undefined;
    try {
      for (let attempt = 1; attempt <= 60 && !s.ok; attempt++) {
        if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, 500));
        const resp = await this.client.search({ text: query, pageSize: 20 }, this.options(undefined, (t) => (trailers = t)));
        const index = resp.results.findIndex((r) => r.asset?.assetId === assetId);
        s.found = index >= 0;
        s.rank = index + 1;
        s.results = resp.results.length;
        s.degraded = resp.degraded;
        s.ok = s.found;
      }
      report(s, undefined, trailers);
    } catch (err) {
      report(s, err);
    }
  }

  // A call that must fail with `want`: shows how a caller reads the status code and message.
  async expectError(name: string, want: Code, key: string, text: string): Promise<void> {
    const s: Step = { step: name, code: "OK", ok: false };
    let trailers: Headers | undefined;
    try {
      await this.client.search({ text, pageSize: 5 }, this.options(key, (t) => (trailers = t)));
      report(s, undefined, trailers);
    } catch (err) {
      s.ok = ConnectError.from(err).code === want;
      report(s, err);
    }
  }

  async delete(assetId: string): Promise<void> {
    const s: Step = { step: "delete", code: "OK", ok: true, asset_id: assetId };
    let trailers: Headers | undefined;
    try {
      await this.client.deleteAsset({ assetId }, this.options(undefined, (t) => (trailers = t)));
      report(s, undefined, trailers);
    } catch (err) {
      s.ok = false;
      report(s, err);
    }
  }
}

// ---- a small PNG, drawn here so the example needs no image library ------------------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

// A boat on a lake. The nonce goes into the top row of pixels so that every run ingests different bytes
// (the gateway treats identical bytes under another id as a duplicate).
function examplePng(nonce: string): Uint8Array {
  const w = 96;
  const h = 64;
  const rows: Buffer[] = [];
  for (let y = 0; y < h; y++) {
    const row = Buffer.alloc(1 + 3 * w); // filter byte 0 (None), then RGB
    for (let x = 0; x < w; x++) {
      let c = y >= 40 ? [30, 80, 160] : [135, 190, 235];
      if (y >= 34 && y < 40 && x >= 24 && x < 72) c = [90, 50, 20];
      if (y >= 8 && y < 34 && x >= 48 - (y - 8) && x < 48) c = [210, 30, 30];
      if (y === 0 && x < nonce.length) c = [nonce.charCodeAt(x), 190, 235];
      row.set(c, 1 + 3 * x);
    }
    rows.push(row);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(w, 0);
  header.writeUInt32BE(h, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, no filter, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        addr: { type: "string", default: process.env.IMAGESEARCH_GATEWAY_ADDR ?? "127.0.0.1:50051" },
        "api-key": { type: "string", default: process.env.IMAGESEARCH_API_KEY ?? "" },
        "asset-id": { type: "string", default: "" },
        image: { type: "string", default: "" },
        license: { type: "string", default: "CC0-1.0" },
        timeout: { type: "string", default: "20" }, // seconds
      },
    }).values;
  } catch (err) {
    console.error(String(err));
    return 2;
  }
  const apiKey = args["api-key"] ?? "";
  if (!apiKey) {
    console.error("missing --api-key (or IMAGESEARCH_API_KEY)");
    return 2;
  }
  const nonce = `n${randomBytes(6).toString("hex")}`;
  const assetId = args["asset-id"] || `example-ts-${nonce}`;
  const image = args.image ? new Uint8Array(readFileSync(args.image)) : examplePng(nonce);

  // Plaintext HTTP/2 on loopback; use an https:// base URL for a gateway behind TLS.
  const transport = createGrpcTransport({ baseUrl: `http://${args.addr}` });
  const example = new Example(createClient(GatewayService, transport), apiKey, Number(args.timeout) * 1000);

  await example.ingest(assetId, nonce, image, args.license ?? "CC0-1.0");
  await example.search(assetId, `red sailing boat ${nonce}`);
  await example.expectError("invalid_argument", Code.InvalidArgument, apiKey, "");
  await example.expectError("unauthenticated", Code.Unauthenticated, "not-a-valid-key", "red sailing boat");
  await example.delete(assetId);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
