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
func parseStatCPU(stat string) (float64, error) {
	st, err := parseStat(stat)
	return st.cpu, err
}

// stat is what the benchmark reads from a /proc/PID/stat line.
type stat struct {
	comm string
	ppid int
	// cpu is utime+stime, children is cutime+cstime (children waited
	// for), both in seconds.
	cpu, children float64
}

// parseStat reads a /proc/PID/stat line. The command name (field 2) is in
// parentheses and may hold spaces, so fields are counted from the last ')'.
func parseStat(line string) (stat, error) {
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return stat{}, fmt.Errorf("unexpected /proc stat line %q", line)
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(line[end+1:])
	if len(f) < 15 {
		return stat{}, fmt.Errorf("unexpected /proc stat line %q", line)
	}
	st := stat{comm: line[open+1 : end]}
	var ticks [4]int64
	var err error
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return stat{}, fmt.Errorf("/proc stat ppid: %w", err)
	}
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return stat{}, fmt.Errorf("/proc stat field %d: %w", 14+i, err)
		}
	}
	st.cpu = float64(ticks[0]+ticks[1]) / clockTicks
	st.children = float64(ticks[2]+ticks[3]) / clockTicks
	return st, nil
}

// The processes a run's CPU is attributed to, besides the controller.
const (
	procAPIServer = "kube-apiserver"
	procEtcd      = "etcd"
	// procBench is this process (the clients, the informers, the Git
	// server) and the children it waited for (git-receive-pack).
	procBench = "benchmark"
	// procOther is the machine's busy time not in any of the others:
	// PostgreSQL, the Go toolchain, whatever else runs.
	procOther = "other"
)

// machineCPU is CPU seconds so far: by process, and the whole machine's
// busy and total time (every CPU) from /proc/stat.
type machineCPU struct {
	byProcess   map[string]float64
	busy, total float64
}

// readMachineCPU reads the CPU time of this process, of the control plane
// it started (children named kube-apiserver and etcd) and of the machine.
func readMachineCPU() (machineCPU, error) {
	m := machineCPU{byProcess: map[string]float64{}}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return m, err
	}
	st, err := parseStat(string(self))
	if err != nil {
		return m, err
	}
	m.byProcess[procBench] = st.cpu + st.children
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return m, err
	}
	pid := os.Getpid()
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone since the listing
		}
		st, err := parseStat(string(b))
		if err != nil || st.ppid != pid {
			continue
		}
		if st.comm == procAPIServer || st.comm == procEtcd {
			m.byProcess[st.comm] += st.cpu
		}
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m, err
	}
	m.busy, m.total, err = parseProcStat(string(b))
	return m, err
}

// parseProcStat returns the busy and total seconds of all CPUs from
// /proc/stat's first line ("cpu user nice system idle iowait irq softirq
// steal ..."); idle and iowait are not busy.
func parseProcStat(s string) (busy, total float64, err error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var sum, idle int64
	// Guest time (fields 9 and 10) is already counted in user and nice.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat cpu field %d: %w", i+1, err)
		}
		sum += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return float64(sum-idle) / clockTicks, float64(sum) / clockTicks, nil
}

// sub is the CPU used between before and m, with the controller's share
// (measured separately) and the rest of the machine's busy time as other.
func (m machineCPU) sub(before machineCPU, controller float64) (map[string]float64, float64) {
	out := map[string]float64{"controller": controller}
	accounted := controller
	for k, v := range m.byProcess {
		out[k] = v - before.byProcess[k]
		accounted += out[k]
	}
	busy := m.busy - before.busy
	out[procOther] = max(0, busy-accounted)
	return out, safeDiv(busy, m.total-before.total)
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
