package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times; the kernel
// reports them in 1/100 s on every architecture Go runs Linux on.
const clockTicks = 100

// procStats is what /proc says about the controller process.
type procStats struct {
	// PeakRSS is VmHWM, the resident set's high-water mark, in bytes.
	PeakRSS int64
	// RSS is VmRSS now, in bytes.
	RSS int64
	// CPUSeconds is user plus system time so far.
	CPUSeconds float64
}

func readProc(pid int) (procStats, error) {
	var st procStats
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmHWM":
			st.PeakRSS, err = parseKB(v)
		case "VmRSS":
			st.RSS, err = parseKB(v)
		}
		if err != nil {
			return st, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	st.CPUSeconds, err = parseStatCPU(string(stat))
	return st, err
}

// parseKB reads "  123456 kB".
func parseKB(v string) (int64, error) {
	fields := strings.Fields(v)
	if len(fields) != 2 || fields[1] != "kB" {
		return 0, fmt.Errorf("unexpected %q", v)
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	return n * 1024, err
}

// parseStatCPU returns utime+stime of a /proc/PID/stat line in seconds.
// The command name (field 2) is in parentheses and may hold spaces, so
// fields are counted from the last ')'.
func parseStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15).
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return float64(utime+stime) / clockTicks, nil
}

// loadAverage is /proc/loadavg's first three fields, to say how busy the
// machine was around a run.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
