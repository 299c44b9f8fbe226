// Command pgtestd runs a throwaway PostgreSQL server (internal/store/pgtest)
// for test runners that are not Go tests, such as the official-SDK suite
// in compat/node: it prints the URL of a new, empty database on its first
// line of output and keeps the server running until its standard input
// closes or it is signalled, then stops the server and removes its files.
//
//	go run ./internal/store/pgtest/pgtestd
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/herd-iot/herd/internal/store/pgtest"
)

func main() {
	s, err := pgtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtestd:", err)
		os.Exit(1)
	}
	name, err := s.CreateDatabase(context.Background())
	if err != nil {
		s.Stop()
		fmt.Fprintln(os.Stderr, "pgtestd: create database:", err)
		os.Exit(1)
	}
	fmt.Println(s.DatabaseURL(name))
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	s.Stop()
}
