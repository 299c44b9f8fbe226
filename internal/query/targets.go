package query

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// CountTargets counts the devices a job's queryCondition selects ("*":
// every device) and how many of them are connected, with one twin query:
// SELECT connectionState, COUNT() FROM devices WHERE (condition) GROUP BY
// connectionState. It serves the job preview (internal/job.Targets) and
// the dashboard's device counts.
func (s *Service) CountTargets(ctx context.Context, queryCondition string) (total, connected int64, err error) {
	where, err := WhereClause(queryCondition)
	if err != nil {
		return 0, 0, err
	}
	res, err := s.Run(ctx, "SELECT connectionState, COUNT() AS n FROM devices"+where+" GROUP BY connectionState", MaxPageSize, "")
	if err != nil {
		return 0, 0, err
	}
	for _, it := range res.Items {
		row, _ := it.(map[string]any)
		n, err := rowCount(row["n"])
		if err != nil {
			return 0, 0, err
		}
		total += n
		if row["connectionState"] == string(herd.Connected) {
			connected += n
		}
	}
	return total, connected, nil
}

// SampleTargets returns up to n ids (at most MaxPageSize) of the devices
// a queryCondition selects, in device id order: one page of SELECT
// deviceId FROM devices WHERE (condition).
func (s *Service) SampleTargets(ctx context.Context, queryCondition string, n int) ([]string, error) {
	where, err := WhereClause(queryCondition)
	if err != nil {
		return nil, err
	}
	res, err := s.Run(ctx, "SELECT deviceId FROM devices"+where, n, "")
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(res.Items))
	for _, it := range res.Items {
		row, _ := it.(map[string]any)
		if id, ok := row["deviceId"].(string); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// WhereClause returns " WHERE (condition)" for a job's queryCondition, to
// follow "SELECT … FROM devices", or "" for "*". The condition is parsed
// first, so that the text put into the query is exactly one expression
// (nothing can follow it); errors are as AsHerdError gives them.
func WhereClause(queryCondition string) (string, error) {
	c := strings.TrimSpace(queryCondition)
	q, err := ParseCondition(c)
	if err != nil {
		return "", AsHerdError(err)
	}
	if q.Where == nil {
		return "", nil
	}
	return " WHERE (" + c + ")", nil
}

// rowCount reads a COUNT() value of a result row.
func rowCount(v any) (int64, error) {
	switch n := v.(type) {
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	case float64:
		return int64(n), nil
	case json.Number:
		return strconv.ParseInt(n.String(), 10, 64)
	}
	return 0, fmt.Errorf("count: unexpected value %v (%T)", v, v)
}
