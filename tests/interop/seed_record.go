// Decodes grpc-etcd records with the Go original's record types (same field names, types,
// JSON tags and nesting as hwholiday learning_tools etcd/register), strictly: an unknown
// field is an error. Prints the record re-encoded by Go's encoding/json, so the test can
// compare it byte for byte with what grpc-etcd wrote.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type Node struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Id      string `json:"id"`
	Version string `json:"version"`
	Address string `json:"address"`
}

type Endpoints struct {
	Online         bool   `json:"online"`
	LimitingSwitch bool   `json:"limiting_switch"`
	Limiting       int64  `json:"limiting"`
	Fuse           bool   `json:"fuse"`
	Defaults       []byte `json:"defaults"`
}

type Options struct {
	Node      *Node                `json:"node"`
	Metadata  map[string]string    `json:"metadata"`
	Endpoints map[string]Endpoints `json:"endpoints"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var opts Options
	if err := dec.Decode(&opts); err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		os.Exit(2)
	}
	out, err := json.Marshal(&opts)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(out)
}
