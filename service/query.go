package service

import (
	"bytes"
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
)

// Item types of query results (the x-ms-item-type header).
const (
	ItemTwin      = "Twin"
	ItemDeviceJob = "DeviceJob"
	ItemRaw       = "Raw"
)

// QueryPage is one page of a twin query's results.
type QueryPage struct {
	// ItemType is Twin (SELECT * FROM devices), DeviceJob (FROM
	// devices.jobs) or Raw (projections and aggregates).
	ItemType string
	// Items are the results as JSON documents.
	Items []json.RawMessage
	// Continuation asks the hub for the next page; "" on the last one.
	Continuation string
}

// Twins decodes a page of Twin items.
func (p *QueryPage) Twins() ([]*herd.Twin, error) {
	out := make([]*herd.Twin, len(p.Items))
	return out, p.decode(func(i int) any { out[i] = &herd.Twin{}; return out[i] })
}

// DeviceJobs decodes a page of DeviceJob items.
func (p *QueryPage) DeviceJobs() ([]*herd.DeviceJob, error) {
	out := make([]*herd.DeviceJob, len(p.Items))
	return out, p.decode(func(i int) any { out[i] = &herd.DeviceJob{}; return out[i] })
}

// Rows decodes the items as JSON objects (numbers as json.Number).
func (p *QueryPage) Rows() ([]map[string]any, error) {
	out := make([]map[string]any, len(p.Items))
	return out, p.decode(func(i int) any { return &out[i] })
}

func (p *QueryPage) decode(dst func(i int) any) error {
	for i, it := range p.Items {
		dec := json.NewDecoder(bytes.NewReader(it))
		dec.UseNumber()
		if err := dec.Decode(dst(i)); err != nil {
			return err
		}
	}
	return nil
}

// QueryOption configures Query.
type QueryOption func(*queryOptions)

type queryOptions struct {
	pageSize     int
	continuation string
}

// WithPageSize asks for pages of at most n items (the hub caps them at
// 100, its default).
func WithPageSize(n int) QueryOption { return func(o *queryOptions) { o.pageSize = n } }

// WithContinuation starts at the page a previous QueryPage.Continuation
// named.
func WithContinuation(token string) QueryOption {
	return func(o *queryOptions) { o.continuation = token }
}

// Query runs an IoT Hub query (POST /devices/query) and iterates over its
// pages, fetching each when the loop asks for it:
//
//	for page, err := range c.Query(ctx, "SELECT * FROM devices WHERE tags.building = 43") {
//		if err != nil { … }
//		twins, err := page.Twins()
//	}
//
// An invalid query yields one ArgumentInvalid error whose message gives
// the line and column.
func (c *Client) Query(ctx context.Context, query string, opts ...QueryOption) iter.Seq2[*QueryPage, error] {
	var o queryOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(*QueryPage, error) bool) {
		token := o.continuation
		for {
			page, err := c.QueryPage(ctx, query, o.pageSize, token)
			if !yield(page, err) || err != nil || page.Continuation == "" {
				return
			}
			token = page.Continuation
		}
	}
}

// QueryPage fetches one page of a query: pageSize items at most (0: the
// hub's default) after continuation ("" for the first page).
func (c *Client) QueryPage(ctx context.Context, query string, pageSize int, continuation string) (*QueryPage, error) {
	h := http.Header{}
	if pageSize > 0 {
		h.Set("x-ms-max-item-count", strconv.Itoa(pageSize))
	}
	if continuation != "" {
		h.Set("x-ms-continuation", continuation)
	}
	var items []json.RawMessage
	reply, err := c.do(ctx, request{method: http.MethodPost, path: "/devices/query", header: h,
		body: map[string]string{"query": query}, out: &items})
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	return &QueryPage{ItemType: reply.Get("x-ms-item-type"), Items: items,
		Continuation: reply.Get("x-ms-continuation")}, nil
}
