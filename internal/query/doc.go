// Package query owns the IoT Hub query language (§7 of the compatibility
// reference, and §6.5 for devices.jobs): its lexer, a hand-written
// recursive-descent parser, the AST (whose String method prints text that
// parses back to the same tree), a reference evaluator over JSON documents
// in memory, and a compiler to SQL with bound parameters through a small
// Dialect interface.
//
// The language's semantics are JSON's, not SQL's, and are written down in
// docs/query.md: a number never equals a string, true never equals 1, a
// comparison with an undefined property is false, and a condition holds
// only when it is the boolean true. The evaluator (Query.Match, Eval,
// Query.Aggregate) defines them; the compiled SQL must agree, which a
// differential test in internal/store/sqlite checks on real SQLite.
//
// # Running queries
//
// Service.Run parses query text and runs one page through a Store (the
// SQLite store implements it), with Azure's page size rules (§3.5). The
// REST API (POST /devices/query) is a thin layer over it.
//
// # Job targets
//
// A job's queryCondition is the WHERE expression alone, "*" meaning every
// device (§6.2). The jobs engine turns it into one set-based statement:
//
//	cond, err := query.CompileJobCondition(query.SQLite, job.QueryCondition, "d")
//	if err != nil {
//		// *query.Error (with line and column) or *query.TooLongError: fail
//		// the job with err.Error() as its failureReason.
//	}
//	_, err = tx.ExecContext(ctx, `INSERT INTO device_jobs (job_id, device_id, …)
//		SELECT ?, d.device_id, … FROM devices d WHERE `+cond.Text, append([]any{…}, cond.Args...)...)
//
// cond.Text is a condition over the columns of the devices table,
// qualified with the alias given ("" for none). With the SQLite dialect its
// placeholders are positional "?": put cond.Args in the statement's
// arguments where the condition stands (after the arguments of the text
// before it, as above). A dialect with numbered placeholders (PostgreSQL's
// $n) numbers them 1…n. hub/jobs.go wires this into the jobs engine.
// CompileCondition does the same for an already parsed query; an error of
// either is turned into the REST API's error by AsHerdError.
package query
