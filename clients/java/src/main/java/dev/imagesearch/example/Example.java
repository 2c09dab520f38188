package dev.imagesearch.example;

import com.google.protobuf.ByteString;
import dev.imagesearch.v1.DeleteAssetRequest;
import dev.imagesearch.v1.GatewayServiceGrpc;
import dev.imagesearch.v1.IngestOutcome;
import dev.imagesearch.v1.IngestRequest;
import dev.imagesearch.v1.IngestResponse;
import dev.imagesearch.v1.License;
import dev.imagesearch.v1.SearchRequest;
import dev.imagesearch.v1.SearchResponse;
import io.grpc.ClientInterceptor;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import javax.imageio.ImageIO;

/**
 * Java client example for the imagesearch gateway: ingests one image, finds it again with a text search,
 * shows how error statuses come back (a search with neither text nor image, a call with a wrong API key)
 * and deletes the asset.
 *
 * <pre>java -jar target/imagesearch-example.jar --addr 127.0.0.1:50051 --api-key "$IMAGESEARCH_API_KEY"</pre>
 *
 * <p>Every step prints one JSON line on stdout and a readable line on stderr. Exit status: 0 when every
 * step behaved as the contract says, 1 when one did not, 2 for bad arguments.
 */
public final class Example {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> REQUEST_ID =
      Metadata.Key.of("x-request-id", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel channel;
  private final String apiKey;
  private final long timeoutMs;
  private boolean failed;

  private Example(ManagedChannel channel, String apiKey, long timeoutMs) {
    this.channel = channel;
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
  }

  /** Outcome of one call: the response trailers are captured for the request id. */
  private static final class Call {
    final AtomicReference<Metadata> headers = new AtomicReference<>();
    final AtomicReference<Metadata> trailers = new AtomicReference<>();
  }

  /** Every call carries `authorization: Bearer <key>` metadata and a deadline. */
  private <S extends AbstractStub<S>> S prepare(S stub, String key, Call call) {
    Metadata md = new Metadata();
    md.put(AUTHORIZATION, "Bearer " + key);
    ClientInterceptor attach = MetadataUtils.newAttachHeadersInterceptor(md);
    ClientInterceptor capture = MetadataUtils.newCaptureMetadataInterceptor(call.headers, call.trailers);
    return stub.withInterceptors(attach, capture).withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS);
  }

  /** Prints one step; a non-null error fills in the status code, message and the request id. */
  private void report(Map<String, Object> step, boolean ok, Throwable error, Metadata trailers) {
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("step", step.remove("step"));
    line.put("code", "OK");
    line.put("message", step.remove("message"));
    if (error != null) {
      Status status = Status.fromThrowable(error);
      line.put("code", status.getCode().name());
      line.put("message", status.getDescription());
      Metadata errorTrailers = Status.trailersFromThrowable(error);
      if (errorTrailers != null) {
        trailers = errorTrailers;
      }
    }
    line.put("request_id", trailers == null ? null : trailers.get(REQUEST_ID));
    line.put("ok", ok);
    line.putAll(step);
    if (!ok) {
      failed = true;
    }
    System.out.println(Json.object(line));
    System.err.printf(
        "[%s] %-16s %s %s (request id \"%s\")%n",
        ok ? "ok" : "UNEXPECTED",
        line.get("step"),
        line.get("code"),
        line.get("message") == null ? "" : line.get("message"),
        line.get("request_id") == null ? "" : line.get("request_id"));
  }

  private static Map<String, Object> step(String name) {
    Map<String, Object> s = new LinkedHashMap<>();
    s.put("step", name);
    return s;
  }

  void ingest(String assetId, String nonce, byte[] image, String license) {
    Map<String, Object> s = step("ingest");
    s.put("asset_id", assetId);
    Call call = new Call();
    List<IngestResponse> responses = new ArrayList<>();
    CompletableFuture<Void> done = new CompletableFuture<>();
    // Ingest is a bidirectional stream: one acknowledgement per request, sent after the asset is stored.
    StreamObserver<IngestRequest> requests =
        prepare(GatewayServiceGrpc.newStub(channel), apiKey, call)
            .ingest(
                new StreamObserver<>() {
                  @Override
                  public void onNext(IngestResponse value) {
                    synchronized (responses) {
                      responses.add(value);
                    }
                  }

                  @Override
                  public void onError(Throwable t) {
                    done.completeExceptionally(t);
                  }

                  @Override
                  public void onCompleted() {
                    done.complete(null);
                  }
                });
    requests.onNext(
        IngestRequest.newBuilder()
            .setAssetId(assetId)
            .setImage(ByteString.copyFrom(image))
            .setUri("example://clients/java/" + assetId + ".png")
            .setCaption("a red sailing boat on a calm blue lake")
            .addAllTags(List.of("boat", "sailing", "lake", "example", nonce))
            .setOwner("clients-example")
            .setLicense(License.newBuilder().setName(license))
            .setSource("clients/java")
            .build());
    requests.onCompleted();
    try {
      done.get(timeoutMs + 5_000, TimeUnit.MILLISECONDS);
    } catch (ExecutionException e) {
      report(s, false, e.getCause(), null);
      return;
    } catch (Exception e) { // the deadline cancels the call well before this wait gives up
      report(s, false, Status.DEADLINE_EXCEEDED.withCause(e).asRuntimeException(), null);
      return;
    }
    boolean ok = false;
    s.put("message", "the stream ended without an acknowledgement");
    synchronized (responses) {
      for (IngestResponse r : responses) {
        s.put("outcome", r.getOutcome().name());
        s.remove("message");
        ok =
            r.getOutcome() == IngestOutcome.INGEST_OUTCOME_CREATED
                || r.getOutcome() == IngestOutcome.INGEST_OUTCOME_UPDATED
                || r.getOutcome() == IngestOutcome.INGEST_OUTCOME_UNCHANGED;
        if (r.hasError()) { // FAILED: the item's own status code and message
          String code = Status.fromCodeValue(r.getError().getCode()).getCode().name();
          s.put("message", "item error " + code + ": " + r.getError().getMessage());
        } else if (!r.getDuplicateOf().isEmpty()) {
          s.put("message", "duplicate of " + r.getDuplicateOf());
        }
      }
    }
    report(s, ok, null, call.trailers.get());
  }

  void search(String assetId, String query) {
    Map<String, Object> s = step("search");
    s.put("asset_id", assetId);
    Call call = new Call();
    try {
      // With deferred analysis (the gateway's default) an acknowledged image becomes searchable once
      // its safety analysis is done, seconds later: search until it is there, for up to 30 s.
      SearchResponse resp = null;
      int rank = 0;
      for (int attempt = 1; attempt <= 60 && rank == 0; attempt++) {
        if (attempt > 1) {
          Thread.sleep(500);
        }
        call = new Call();
        resp =
            prepare(GatewayServiceGrpc.newBlockingStub(channel), apiKey, call)
                .search(SearchRequest.newBuilder().setText(query).setPageSize(20).build());
        for (int i = 0; i < resp.getResultsCount(); i++) {
          if (resp.getResults(i).getAsset().getAssetId().equals(assetId)) {
            rank = i + 1;
            break;
          }
        }
      }
      s.put("found", rank > 0);
      if (rank > 0) {
        s.put("rank", rank);
      }
      s.put("results", resp.getResultsCount());
      if (resp.getDegraded()) {
        s.put("degraded", true);
      }
      report(s, rank > 0, null, call.trailers.get());
    } catch (StatusRuntimeException e) {
      report(s, false, e, null);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      report(s, false, null, null);
    }
  }

  /** A call that must fail with {@code want}: shows how a caller reads the status code and message. */
  void expectError(String name, Status.Code want, String key, SearchRequest request) {
    Call call = new Call();
    try {
      prepare(GatewayServiceGrpc.newBlockingStub(channel), key, call).search(request);
      report(step(name), false, null, call.trailers.get());
    } catch (StatusRuntimeException e) {
      report(step(name), e.getStatus().getCode() == want, e, null);
    }
  }

  void delete(String assetId) {
    Map<String, Object> s = step("delete");
    s.put("asset_id", assetId);
    Call call = new Call();
    try {
      prepare(GatewayServiceGrpc.newBlockingStub(channel), apiKey, call)
          .deleteAsset(DeleteAssetRequest.newBuilder().setAssetId(assetId).build());
      report(s, true, null, call.trailers.get());
    } catch (StatusRuntimeException e) {
      report(s, false, e, null);
    }
  }

  /**
   * A boat on a lake. The nonce goes into the top row of pixels so that every run ingests different bytes
   * (the gateway treats identical bytes under another id as a duplicate).
   */
  static byte[] examplePng(String nonce) throws IOException {
    int w = 96;
    int h = 64;
    BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
    for (int y = 0; y < h; y++) {
      for (int x = 0; x < w; x++) {
        int rgb = y >= 40 ? 0x1e50a0 : 0x87beeb;
        if (y >= 34 && y < 40 && x >= 24 && x < 72) {
          rgb = 0x5a3214;
        }
        if (y >= 8 && y < 34 && x >= 48 - (y - 8) && x < 48) {
          rgb = 0xd21e1e;
        }
        if (y == 0 && x < nonce.length()) {
          rgb = (nonce.charAt(x) << 16) | 0x00beeb;
        }
        img.setRGB(x, y, rgb);
      }
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ImageIO.write(img, "png", out);
    return out.toByteArray();
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new LinkedHashMap<>();
    opts.put("addr", envOr("IMAGESEARCH_GATEWAY_ADDR", "127.0.0.1:50051"));
    opts.put("api-key", envOr("IMAGESEARCH_API_KEY", ""));
    opts.put("asset-id", "");
    opts.put("image", "");
    opts.put("license", "CC0-1.0");
    opts.put("timeout", "20"); // seconds
    for (int i = 0; i < args.length; i++) {
      String name = args[i].replaceFirst("^--?", "");
      if (!opts.containsKey(name) || i + 1 >= args.length) {
        System.err.println("usage: -addr HOST:PORT -api-key KEY [-asset-id ID] [-image FILE] [-license NAME] [-timeout S]");
        System.exit(2);
      }
      opts.put(name, args[++i]);
    }
    if (opts.get("api-key").isEmpty()) {
      System.err.println("missing -api-key (or IMAGESEARCH_API_KEY)");
      System.exit(2);
    }
    byte[] raw = new byte[6];
    new SecureRandom().nextBytes(raw);
    String nonce = "n" + HexFormat.of().formatHex(raw);
    String assetId = opts.get("asset-id").isEmpty() ? "example-java-" + nonce : opts.get("asset-id");
    byte[] image =
        opts.get("image").isEmpty() ? examplePng(nonce) : Files.readAllBytes(Path.of(opts.get("image")));

    // Plaintext on loopback; use .useTransportSecurity() for a gateway behind TLS.
    ManagedChannel channel = ManagedChannelBuilder.forTarget(opts.get("addr")).usePlaintext().build();
    Example example = new Example(channel, opts.get("api-key"), (long) (Double.parseDouble(opts.get("timeout")) * 1000));
    try {
      example.ingest(assetId, nonce, image, opts.get("license"));
      example.search(assetId, "red sailing boat " + nonce);
      example.expectError(
          "invalid_argument",
          Status.Code.INVALID_ARGUMENT,
          example.apiKey,
          SearchRequest.newBuilder().setPageSize(5).build());
      example.expectError(
          "unauthenticated",
          Status.Code.UNAUTHENTICATED,
          "not-a-valid-key",
          SearchRequest.newBuilder().setText("red sailing boat").build());
      example.delete(assetId);
    } finally {
      channel.shutdown().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(example.failed ? 1 : 0);
  }

  private static String envOr(String name, String fallback) {
    String v = System.getenv(name);
    return v == null || v.isEmpty() ? fallback : v;
  }

  /** Just enough JSON for flat objects of strings, numbers and booleans (null values are left out). */
  static final class Json {
    static String object(Map<String, Object> fields) {
      StringBuilder sb = new StringBuilder("{");
      for (Map.Entry<String, Object> e : fields.entrySet()) {
        if (e.getValue() == null) {
          continue;
        }
        if (sb.length() > 1) {
          sb.append(',');
        }
        sb.append(string(e.getKey())).append(':');
        Object v = e.getValue();
        sb.append(v instanceof Number || v instanceof Boolean ? v.toString() : string(v.toString()));
      }
      return sb.append('}').toString();
    }

    static String string(String s) {
      StringBuilder sb = new StringBuilder("\"");
      for (char c : s.toCharArray()) {
        switch (c) {
          case '"' -> sb.append("\\\"");
          case '\\' -> sb.append("\\\\");
          case '\n' -> sb.append("\\n");
          case '\r' -> sb.append("\\r");
          case '\t' -> sb.append("\\t");
          default -> {
            if (c < 0x20) {
              sb.append(String.format("\\u%04x", (int) c));
            } else {
              sb.append(c);
            }
          }
        }
      }
      return sb.append('"').toString();
    }
  }
}
