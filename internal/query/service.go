package query

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"

	"github.com/herd-iot/herd"
)

// Page sizes of POST /devices/query (§3.5): the x-ms-max-item-count header
// may ask for fewer.
const (
	DefaultPageSize = 100
	MaxPageSize     = 100
)

// Item types, as the x-ms-item-type header names them (§3.5).
const (
	ItemTwin      = "Twin"
	ItemDeviceJob = "DeviceJob"
	ItemRaw       = "Raw"
)

// Result is one page of a query's results.
type Result struct {
	// ItemType is Twin, DeviceJob or Raw.
	ItemType string
	// Items are the page's results: *herd.Twin, *herd.DeviceJob or
	// map[string]any rows.
	Items []any
	// Continuation asks for the next page; "" on the last page.
	Continuation string
}

// Store runs parsed queries. RunQuery returns up to size items after the
// position that cursor (from an earlier Cursor, nil for the first page)
// describes, and the cursor of the next page, or nil when there is none.
// Pages are stable while the data does not change: items come in a fixed
// order (device id; job id and device id; group keys) and a cursor names
// the last item returned.
type Store interface {
	RunQuery(ctx context.Context, q *Query, size int, cursor *Cursor) ([]any, *Cursor, error)
}

// Cursor is a position in a query's results.
type Cursor struct {
	// Keys identify the last item returned (device id; job and device id;
	// for aggregates, the number of rows returned).
	Keys []string `json:"k"`
	// Returned counts the items returned so far, for TOP.
	Returned int64 `json:"n"`
	// Query is a hash of the query text, so that a continuation is not
	// used with another query.
	Query uint64 `json:"q"`
}

// Service runs twin queries for the REST API.
type Service struct {
	store Store
}

// NewService returns a query service over store.
func NewService(store Store) *Service { return &Service{store: store} }

// ItemType is the x-ms-item-type of the query's results.
func (q *Query) ItemType() string {
	switch {
	case q.From == DeviceJobs:
		return ItemDeviceJob
	case q.Star:
		return ItemTwin
	}
	return ItemRaw
}

// Run parses text and returns one page: pageSize items at most (0 means
// DefaultPageSize; more than MaxPageSize is capped) after continuation
// ("" for the first page). Syntax and type errors are ArgumentInvalid with
// the position in the message; a query longer than MaxLength is
// PreconditionFailed, as in Azure.
func (s *Service) Run(ctx context.Context, text string, pageSize int, continuation string) (*Result, error) {
	q, err := Parse(text)
	if err != nil {
		return nil, AsHerdError(err)
	}
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	pageSize = min(pageSize, MaxPageSize)
	h := fnv.New64a()
	h.Write([]byte(q.String()))
	sum := h.Sum64()
	var cur *Cursor
	if continuation != "" {
		cur = &Cursor{}
		b, err := base64.RawURLEncoding.DecodeString(continuation)
		if err == nil {
			err = json.Unmarshal(b, cur)
		}
		if err != nil || cur.Query != sum {
			return nil, herd.Errorf(herd.ErrArgumentInvalid, "the continuation token does not belong to this query")
		}
	}
	if q.HasTop {
		var done int64
		if cur != nil {
			done = cur.Returned
		}
		left := q.Top - done
		if left <= 0 {
			return &Result{ItemType: q.ItemType(), Items: []any{}}, nil
		}
		pageSize = int(min(int64(pageSize), left))
	}
	items, next, err := s.store.RunQuery(ctx, q, pageSize, cur)
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []any{}
	}
	res := &Result{ItemType: q.ItemType(), Items: items}
	if next != nil {
		next.Returned = int64(len(items))
		if cur != nil {
			next.Returned += cur.Returned
		}
		next.Query = sum
		if !q.HasTop || next.Returned < q.Top {
			b, _ := json.Marshal(next)
			res.Continuation = base64.RawURLEncoding.EncodeToString(b)
		}
	}
	return res, nil
}

// AsHerdError turns a parse error into the herd error the REST API
// answers with: ArgumentInvalid with the position, or PreconditionFailed
// for a query over MaxLength characters.
func AsHerdError(err error) error {
	var perr *Error
	var long *TooLongError
	switch {
	case errors.As(err, &long):
		return herd.Errorf(herd.ErrPreconditionFailed, "%s", long.Error())
	case errors.As(err, &perr):
		return herd.Errorf(herd.ErrArgumentInvalid, "invalid query: %s", perr.Error())
	}
	return err
}
