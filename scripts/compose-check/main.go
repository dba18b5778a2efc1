// compose-check loads a compose file the way `docker compose config` does, without a container
// engine: compose-go (the loader inside docker compose) reads the YAML, resolves anchors and
// merge keys, interpolates ${VAR:-default}, validates the result against the Compose
// Specification's JSON Schema (embedded in compose-go), checks references between services,
// networks and volumes, and normalises it. On success it prints the resolved project as JSON
// (for scripts/compose_check.py); on failure it prints why and exits 1.
//
// Usage: go run . [-e NAME=VALUE]... FILE...
//
// Only the -e variables are set: the environment of whoever runs the check and any .env file
// stay out, so the check is of the file and its defaults, the same on every machine.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, ",") }

func (e *envFlags) Set(value string) error {
	if !strings.Contains(value, "=") {
		return fmt.Errorf("-e wants NAME=VALUE, not %q", value)
	}
	*e = append(*e, value)
	return nil
}

func main() {
	var env envFlags
	flag.Var(&env, "e", "NAME=VALUE for the interpolation (repeatable)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-e NAME=VALUE]... FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	files := make([]string, flag.NArg())
	for i, name := range flag.Args() {
		abs, err := filepath.Abs(name)
		if err != nil {
			fail(err)
		}
		files[i] = abs
	}
	options, err := cli.NewProjectOptions(files,
		cli.WithEnv(env),
		cli.WithWorkingDirectory(filepath.Dir(files[0])),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
	os.Exit(1)
}
