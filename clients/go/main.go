// Command example is the Go client example for the imagesearch gateway: it ingests one image, finds it
// again with a text search, shows how error statuses come back (a search with neither text nor image,
// a call with a wrong API key) and deletes the asset.
//
//	go run . --addr 127.0.0.1:50051 --api-key "$IMAGESEARCH_API_KEY"
//
// Every step prints one JSON line on stdout (the harness in tests/clients reads them) and a readable line
// on stderr. Exit status: 0 when every step behaved as the contract says, 1 when one did not (the failing
// step's gRPC code and message are printed), 2 for bad flags.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	imagesearchv1 "github.com/imagesearch/imagesearch/gen/go/imagesearch/v1"
)

// codeNames spells status codes the way the gRPC spec (and every other language) does.
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE_%d", c)
}

// step is one line of the example's report.
type step struct {
	Step      string `json:"step"`
	Code      string `json:"code"`
	Message   string `json:"message,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	OK        bool   `json:"ok"` // the step behaved as the contract says
	AssetID   string `json:"asset_id,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	Found     *bool  `json:"found,omitempty"`
	Rank      int    `json:"rank,omitempty"`
	Results   *int   `json:"results,omitempty"`
	Degraded  bool   `json:"degraded,omitempty"`
}

type example struct {
	client  imagesearchv1.GatewayServiceClient
	apiKey  string
	timeout time.Duration
	failed  bool
}

// call returns a context with the deadline and the `authorization: Bearer <key>` metadata every call needs.
func (e *example) call(key string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), cancel
}

// report prints a step; err (a gRPC status error or nil) fills code, message and the request id.
func (e *example) report(s step, err error, trailer metadata.MD) {
	s.Code = "OK"
	if err != nil {
		st := status.Convert(err)
		s.Code, s.Message = codeName(st.Code()), st.Message()
	}
	if ids := trailer.Get("x-request-id"); len(ids) > 0 {
		s.RequestID = ids[0]
	}
	if !s.OK {
		e.failed = true
	}
	line, _ := json.Marshal(s)
	fmt.Println(string(line))
	verdict := "ok"
	if !s.OK {
		verdict = "UNEXPECTED"
	}
	fmt.Fprintf(os.Stderr, "[%s] %-16s %s %s (request id %q)\n", verdict, s.Step, s.Code, s.Message, s.RequestID)
}

func (e *example) ingest(assetID, nonce string, img []byte, license string) {
	ctx, cancel := e.call(e.apiKey)
	defer cancel()
	s := step{Step: "ingest", AssetID: assetID}
	stream, err := e.client.Ingest(ctx)
	if err != nil {
		e.report(s, err, nil)
		return
	}
	err = stream.Send(&imagesearchv1.IngestRequest{
		AssetId: assetID,
		Image:   img,
		Uri:     "example://clients/go/" + assetID + ".png",
		Caption: "a red sailing boat on a calm blue lake",
		Tags:    []string{"boat", "sailing", "lake", "example", nonce},
		Owner:   "clients-example",
		License: &imagesearchv1.License{Name: license},
		Source:  "clients/go",
	})
	if err == nil {
		err = stream.CloseSend()
	}
	// io.EOF from Send means the server already ended the call: Recv returns its status.
	if err == nil || errors.Is(err, io.EOF) {
		err = nil
		s.Message = "the stream ended without an acknowledgement"
		for {
			resp, rerr := stream.Recv()
			if rerr != nil {
				if !errors.Is(rerr, io.EOF) {
					err = rerr
				}
				break
			}
			s.Outcome, s.Message = resp.GetOutcome().String(), ""
			switch resp.GetOutcome() {
			case imagesearchv1.IngestOutcome_INGEST_OUTCOME_CREATED, imagesearchv1.IngestOutcome_INGEST_OUTCOME_UPDATED,
				imagesearchv1.IngestOutcome_INGEST_OUTCOME_UNCHANGED:
				s.OK = true
			default: // FAILED carries a per-item error; DUPLICATE names the id that already holds these bytes
				if ie := resp.GetError(); ie != nil {
					s.Message = fmt.Sprintf("item error %s: %s", codeName(codes.Code(ie.GetCode())), ie.GetMessage())
				} else if resp.GetDuplicateOf() != "" {
					s.Message = "duplicate of " + resp.GetDuplicateOf()
				}
			}
		}
	}
	if err != nil {
		s.OK = false
	}
	e.report(s, err, stream.Trailer())
}

// searchAttempts bounds the wait for a fresh asset: with deferred analysis (the gateway's default) an
// acknowledged image becomes searchable once its safety analysis is done, seconds later.
const searchAttempts, searchRetryDelay = 60, 500 * time.Millisecond

func (e *example) search(assetID, query string) {
	var s step
	var trailer metadata.MD
	var err error
	for attempt := 1; attempt <= searchAttempts; attempt++ {
		s, trailer, err = e.searchOnce(assetID, query)
		if err != nil || s.OK {
			break
		}
		time.Sleep(searchRetryDelay)
	}
	e.report(s, err, trailer)
}

func (e *example) searchOnce(assetID, query string) (step, metadata.MD, error) {
	ctx, cancel := e.call(e.apiKey)
	defer cancel()
	var trailer metadata.MD
	resp, err := e.client.Search(ctx, &imagesearchv1.SearchRequest{Text: query, PageSize: 20}, grpc.Trailer(&trailer))
	s := step{Step: "search", AssetID: assetID}
	if err == nil {
		found, n := false, len(resp.GetResults())
		for i, r := range resp.GetResults() {
			if r.GetAsset().GetAssetId() == assetID {
				found, s.Rank = true, i+1
				break
			}
		}
		s.Found, s.Results, s.Degraded, s.OK = &found, &n, resp.GetDegraded(), found
	}
	return s, trailer, err
}

// expectError makes a call that must fail with `want` and shows how a caller reads the status.
func (e *example) expectError(name string, want codes.Code, key string, req *imagesearchv1.SearchRequest) {
	ctx, cancel := e.call(key)
	defer cancel()
	var trailer metadata.MD
	_, err := e.client.Search(ctx, req, grpc.Trailer(&trailer))
	e.report(step{Step: name, OK: status.Code(err) == want}, err, trailer)
}

func (e *example) delete(assetID string) {
	ctx, cancel := e.call(e.apiKey)
	defer cancel()
	var trailer metadata.MD
	_, err := e.client.DeleteAsset(ctx, &imagesearchv1.DeleteAssetRequest{AssetId: assetID}, grpc.Trailer(&trailer))
	e.report(step{Step: "delete", AssetID: assetID, OK: err == nil}, err, trailer)
}

// examplePNG draws a small boat picture. The nonce is written into the top row of pixels so that every
// run ingests different bytes (the gateway treats identical bytes under another id as a duplicate).
func examplePNG(nonce string) []byte {
	const w, h = 96, 64
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{135, 190, 235, 255} // sky
			if y >= 40 {
				c = color.RGBA{30, 80, 160, 255} // lake
			}
			if y >= 34 && y < 40 && x >= 24 && x < 72 { // hull
				c = color.RGBA{90, 50, 20, 255}
			}
			if y >= 8 && y < 34 && x >= 48-(y-8) && x < 48 { // sail
				c = color.RGBA{210, 30, 30, 255}
			}
			img.Set(x, y, c)
		}
	}
	for i := 0; i < len(nonce) && i < w; i++ {
		img.Set(i, 0, color.RGBA{nonce[i], 190, 235, 255})
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}

func main() {
	addr := flag.String("addr", envOr("IMAGESEARCH_GATEWAY_ADDR", "127.0.0.1:50051"), "gateway host:port")
	apiKey := flag.String("api-key", os.Getenv("IMAGESEARCH_API_KEY"), "API key (sent as `authorization: Bearer <key>`)")
	assetID := flag.String("asset-id", "", "asset id to ingest (default: example-go-<random>)")
	imagePath := flag.String("image", "", "image file to ingest (default: a generated PNG)")
	license := flag.String("license", "CC0-1.0", "licence name stored with the image")
	timeoutFlag := flag.String("timeout", "20", "deadline of each call: seconds (20) or a Go duration (1m)")
	flag.Parse()
	if *apiKey == "" {
		fmt.Fprintln(os.Stderr, "missing -api-key (or IMAGESEARCH_API_KEY)")
		os.Exit(2)
	}
	timeout, err := parseTimeout(*timeoutFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	raw := make([]byte, 6)
	_, _ = rand.Read(raw)
	nonce := "n" + hex.EncodeToString(raw)
	if *assetID == "" {
		*assetID = "example-go-" + nonce
	}
	img := examplePNG(nonce)
	if *imagePath != "" {
		if img, err = os.ReadFile(*imagePath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}

	// Plaintext on loopback; use credentials.NewTLS(...) for a gateway behind TLS.
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer conn.Close()

	e := &example{client: imagesearchv1.NewGatewayServiceClient(conn), apiKey: *apiKey, timeout: timeout}
	e.ingest(*assetID, nonce, img, *license)
	e.search(*assetID, "red sailing boat "+nonce)
	e.expectError("invalid_argument", codes.InvalidArgument, *apiKey, &imagesearchv1.SearchRequest{PageSize: 5})
	e.expectError("unauthenticated", codes.Unauthenticated, "not-a-valid-key",
		&imagesearchv1.SearchRequest{Text: "red sailing boat"})
	e.delete(*assetID)
	if e.failed {
		os.Exit(1)
	}
}

// parseTimeout takes seconds ("20", "2.5") like the other languages' examples, or a Go duration ("1m").
func parseTimeout(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
		return time.Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad -timeout %q: give seconds (20) or a duration (1m)", s)
	}
	return d, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
