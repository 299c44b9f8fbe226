// Package examples holds no code of its own: its folders are runnable
// programs written on Herd's Go SDKs, and examples_test.go runs them as
// real processes against an in-process hub.
//
//   - simdevice is the device of Azure's "Schedule and broadcast jobs"
//     tutorial (device/ SDK): it answers the lockDoor direct method and
//     prints desired-property updates.
//   - schedulejob is that tutorial's back end (service/ SDK): it checks the
//     device is registered, schedules a lockDoor method job and a
//     desired-properties twin job on it, and follows both to the end.
//
// The README's "The jobs tutorial in Go" section shows how to run them
// against `herd serve`.
package examples
