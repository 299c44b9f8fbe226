package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// NodeIDFile is the file of a data folder that keeps its node id.
const NodeIDFile = "node-id"

// LocalNodeID returns the node id kept in a data folder, creating one the
// first time: the host's name (as a node id allows) and six random hex
// digits, so that two data folders on one host are two nodes.
func LocalNodeID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, NodeIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if err := ValidNodeID(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the node id: %w", err)
	}
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, host)
	if len(host) > 48 {
		host = host[:48]
	}
	if host == "" {
		host = "node"
	}
	suffix := make([]byte, 3)
	rand.Read(suffix)
	id := host + "-" + hex.EncodeToString(suffix)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data folder: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep the node id: %w", err)
	}
	return id, nil
}
