// Package scheduling decides which destinations receive which output: a
// pure function of selectors, destination labels and the previous
// placement, so that it can be table-tested and gives the same answer on
// every replica and every restart.
package scheduling

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// DestinationNameLabel is a label every destination matches with its own
// name, whether or not it carries it: a stage can pin output to a named
// destination (a route to the destination of its gateway, say).
const DestinationNameLabel = "platform.promised.dev/destination"

// Destination is what scheduling needs to know of a Destination.
type Destination struct {
	Name   string
	Labels map[string]string
	// Strict destinations only receive output whose selectors are not
	// empty (Kratix's strictMatchLabels).
	Strict bool
}

// Group is a part of one workflow's output that is placed as a unit: the
// files of one top-level folder named by a pipeline's selector, or
// (Directory "") every other file.
type Group struct {
	Directory string
	// Selectors must all match; each is a set of labels that must all be
	// present with equal values.
	Selectors []map[string]string
}

// Matches reports whether d may receive output selected by selectors.
func Matches(d Destination, selectors []map[string]string) bool {
	empty := true
	for _, sel := range selectors {
		for k, v := range sel {
			empty = false
			if got, ok := d.Labels[k]; !ok || got != v {
				return false
			}
		}
	}
	return !(empty && d.Strict)
}

// All returns, for each group, every destination it matches (sorted): how
// a promise's dependencies and promise-workflow output are placed.
func All(groups []Group, dests []Destination) map[string][]string {
	out := map[string][]string{}
	for _, g := range groups {
		names := []string{}
		for _, d := range dests {
			if Matches(d, g.Selectors) {
				names = append(names, d.Name)
			}
		}
		sort.Strings(names)
		out[g.Directory] = names
	}
	return out
}

// NoMatchError says which group found no destination.
type NoMatchError struct {
	Directory string
	Selectors []map[string]string
}

func (e *NoMatchError) Error() string {
	where := "the output"
	if e.Directory != "" {
		where = fmt.Sprintf("folder %q of the output", e.Directory)
	}
	return fmt.Sprintf("no destination matches the selectors of %s: %s", where, FormatSelectors(e.Selectors))
}

// One places each group of a request's output on exactly one destination.
// A group stays where previous put it while that destination still
// matches; otherwise it goes to the matching destination with the highest
// rendezvous hash of (key, directory, destination), so adding a
// destination never moves output that is already placed and removing one
// moves only what was on it. key identifies the request (its UID).
func One(key string, groups []Group, dests []Destination, previous map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for _, g := range groups {
		var best string
		var bestScore uint64
		for _, d := range dests {
			if !Matches(d, g.Selectors) {
				continue
			}
			if d.Name == previous[g.Directory] {
				best = d.Name
				break
			}
			if s := score(key, g.Directory, d.Name); best == "" || s > bestScore || (s == bestScore && d.Name < best) {
				best, bestScore = d.Name, s
			}
		}
		if best == "" {
			return nil, &NoMatchError{Directory: g.Directory, Selectors: g.Selectors}
		}
		out[g.Directory] = best
	}
	return out, nil
}

func score(key, dir, dest string) uint64 {
	h := sha256.Sum256([]byte(key + "\x00" + dir + "\x00" + dest))
	return binary.BigEndian.Uint64(h[:8])
}

// FormatSelectors renders selectors as "a=b,c=d" sets joined by " and ",
// or "(none)".
func FormatSelectors(selectors []map[string]string) string {
	var sets []string
	for _, sel := range selectors {
		if len(sel) == 0 {
			continue
		}
		pairs := make([]string, 0, len(sel))
		for k, v := range sel {
			pairs = append(pairs, k+"="+v)
		}
		sort.Strings(pairs)
		sets = append(sets, strings.Join(pairs, ","))
	}
	if len(sets) == 0 {
		return "(none)"
	}
	return strings.Join(sets, " and ")
}
