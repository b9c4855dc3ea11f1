package bench

import (
	"slices"
	"time"
)

// Result is everything one `ksaga bench` run measured (latest.json).
type Result struct {
	Schema    int       `json:"schema"`
	StartedAt time.Time `json:"started_at"`
	TookS     float64   `json:"took_s"`
	Command   string    `json:"command"`
	Machine   Machine   `json:"machine"`
	Tree      Tree      `json:"tree"`
	Settings  Settings  `json:"settings"`

	Unloaded *SagaPhase   `json:"unloaded,omitempty"`  // inflight 1
	Loaded   *SagaPhase   `json:"loaded,omitempty"`    // inflight --inflight
	OpenLoop *SagaPhase   `json:"open_loop,omitempty"` // --rate sagas/s
	Sweep    []*SagaPhase `json:"sweep,omitempty"`

	FloorReply   *FloorPhase `json:"floor_reply,omitempty"`
	FloorEvalsha *FloorPhase `json:"floor_evalsha,omitempty"`
	Ratios       *Ratios     `json:"ratios,omitempty"` // of round 1: Loaded, FloorReply, FloorEvalsha
	// MoreRounds repeat the loaded phase and the floor phases (--rounds);
	// RoundRatios are every round's ratios, round 1 first.
	MoreRounds  []Round      `json:"more_rounds,omitempty"`
	RoundRatios []RoundRatio `json:"round_ratios,omitempty"`

	Attribution *Attribution `json:"redis_attribution,omitempty"`
	RSS         []ProcRSS    `json:"rss_end"`
	Restarts    []string     `json:"function_restarts,omitempty"`
	ColdStart   []ColdStart  `json:"cold_start,omitempty"`
	FromZero    *FromZero    `json:"from_zero,omitempty"`
	Memory      *Memory      `json:"redis_memory,omitempty"`

	// CPUNote says what ksaga-dev's CPU includes besides the broker and
	// its ingress (the workload's).
	CPUNote string `json:"cpu_note,omitempty"`

	Targets []Target `json:"targets"`
	Limits  []string `json:"limits"`
	Notes   []string `json:"notes,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// phases are the saga phases that ran, in the order of the report.
func (res *Result) phases() []*SagaPhase {
	out := []*SagaPhase{res.Unloaded, res.Loaded}
	for _, rd := range res.MoreRounds {
		out = append(out, rd.Loaded)
	}
	out = append(append(out, res.OpenLoop), res.Sweep...)
	return slices.DeleteFunc(out, func(p *SagaPhase) bool { return p == nil })
}

// rounds are round 1 (Loaded and the floor phases) and MoreRounds.
func (res *Result) rounds() []Round {
	return append([]Round{{Loaded: res.Loaded, FloorReply: res.FloorReply, FloorEvalsha: res.FloorEvalsha}}, res.MoreRounds...)
}

// Machine describes where the run happened.
type Machine struct {
	Hostname      string `json:"hostname"`
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model"`
	Kernel        string `json:"kernel"`
	MemTotalBytes int64  `json:"mem_total_bytes"`
	Go            string `json:"go"`
	Redis         string `json:"redis"`
}

// Tree is the source the binaries were built from.
type Tree struct {
	Commit string   `json:"commit"`
	Dirty  []string `json:"dirty,omitempty"` // git status --porcelain
}

// Settings are the run's parameters.
type Settings struct {
	Saga             string             `json:"saga"`            // the workload's definition
	Kinds            []string           `json:"kinds"`           // the workload's kinds of saga, in --mix order
	Labels           []string           `json:"kind_labels"`     // … as the report names them
	OIDC             bool               `json:"sender_identity"` // ksaga dev --oidc and the EventPolicies
	RedisACL         bool               `json:"redis_acl"`       // ksaga dev --redis-acl
	Mode             string             `json:"mode"`
	Inflight         int                `json:"inflight"`
	DurationS        float64            `json:"duration_s"`
	WarmupS          float64            `json:"warmup_s"`
	RatePerS         float64            `json:"rate_per_s"`
	Mix              map[string]float64 `json:"mix"`
	FloorInflight    int                `json:"floor_inflight"`
	ColdStartRuns    int                `json:"cold_start_runs"`
	FromZeroRuns     int                `json:"from_zero_runs"`
	AttributionSagas int                `json:"attribution_sagas"`
	Redis            string             `json:"redis"` // persistence settings
	SagaTimeoutS     float64            `json:"saga_timeout_s"`
	QuietMinIdlePct  float64            `json:"quiet_min_idle_pct"`
	QuietMaxWaitS    float64            `json:"quiet_max_wait_s"`
	Seed             uint64             `json:"seed"`
}

// SagaPhase is one measured saga run.
type SagaPhase struct {
	Name     string  `json:"name"`
	Inflight int     `json:"inflight,omitempty"`   // closed loop
	RatePerS float64 `json:"rate_per_s,omitempty"` // open loop
	Quiet    Quiet   `json:"quiet"`
	WindowS  float64 `json:"window_s"`

	Accepted   int64              `json:"accepted"`        // start commands answered 202 (whole phase)
	Ended      int64              `json:"ended_in_window"` // sagas whose terminal event arrived in the window
	SagasPerS  float64            `json:"sagas_per_s"`
	Latency    Latency            `json:"latency"` // sagas started in the window
	ByKind     map[string]Latency `json:"latency_by_kind"`
	SendLagP99 float64            `json:"send_lag_p99_ms,omitempty"` // open loop
	Errors     PhaseErrors        `json:"errors"`

	// Steps are the CloudEvents each function handled in the window (its
	// ksaga_step_events_total), terminal deliveries those to the bench.
	Steps                map[string]int64 `json:"steps"`
	StepsTotal           int64            `json:"steps_total"`
	StepsPerSaga         float64          `json:"steps_per_saga"`
	TerminalDeliveries   int64            `json:"terminal_deliveries"`
	DeliveriesPerSaga    float64          `json:"deliveries_per_saga"` // steps + terminal deliveries
	BoxBusyPct           float64          `json:"box_busy_pct"`
	CPU                  []ProcCPU        `json:"cpu"`
	CPUUsPerSaga         float64          `json:"cpu_us_per_saga"`         // sum over the processes
	UnaccountedUsPerSaga float64          `json:"unaccounted_us_per_saga"` // box busy time not in them
	Redis                *RedisWindow     `json:"redis,omitempty"`
	// Backlog is the broker's stream length right after the phase (events
	// accepted, not yet delivered), DrainS how long it took to empty.
	Backlog int64   `json:"backlog_after"`
	DrainS  float64 `json:"drain_s"`
}

// PhaseErrors counts what went wrong in a phase.
type PhaseErrors struct {
	Total      int64  `json:"total"`
	Post       int64  `json:"post"`       // transport errors at the ingress
	Status     int64  `json:"status"`     // ingress answers other than 202
	Timeouts   int64  `json:"timeouts"`   // no terminal event within --saga-timeout
	Unexpected int64  `json:"unexpected"` // wrong terminal event for the kind
	Dropped    int64  `json:"dropped"`    // open loop: not sent, too many outstanding
	Late       int64  `json:"late"`       // terminal events for sagas not pending (redeliveries, timed out)
	First      string `json:"first,omitempty"`
}

// ProcCPU is one process's CPU in a window.
type ProcCPU struct {
	Process  string  `json:"process"`
	PID      int     `json:"pid"`
	CPUMs    float64 `json:"cpu_ms"`
	PerUnit  float64 `json:"us_per_unit"`           // µs per saga (or per event in a floor)
	PerStep  float64 `json:"us_per_step,omitempty"` // functions: µs per CloudEvent they handled
	SharePct float64 `json:"share_pct"`
}

// ProcRSS is one process's VmRSS.
type ProcRSS struct {
	Process string `json:"process"`
	PID     int    `json:"pid"`
	Bytes   int64  `json:"bytes"`
}

// RedisWindow is what Redis did in a window, from INFO deltas.
type RedisWindow struct {
	Commands     []CmdRow `json:"commands"` // INFO commandstats deltas (script-internal calls included)
	CallsPerStep float64  `json:"calls_per_step"`
	CallsPerSaga float64  `json:"calls_per_saga"`
	// ReadsPerStep is INFO stats total_reads_processed per step: socket
	// reads that carried commands, i.e. round trips (a pipeline or a
	// MULTI…EXEC sent at once is one), from every client.
	ReadsPerStep      float64 `json:"reads_per_step"`
	ReadsPerSaga      float64 `json:"reads_per_saga"`
	NetInPerSaga      float64 `json:"net_in_bytes_per_saga"`
	NetOutPerSaga     float64 `json:"net_out_bytes_per_saga"`
	ServerUsecPerSaga float64 `json:"command_usec_per_saga"` // commandstats usec: time inside commands
}

// CmdRow is one command's calls in a window.
type CmdRow struct {
	Command     string  `json:"command"`
	Calls       int64   `json:"calls"`
	PerStep     float64 `json:"per_step"`
	PerSaga     float64 `json:"per_saga"`
	UsecPerCall float64 `json:"usec_per_call"`
}

// FloorPhase is one floor run: a plain sdk-go receiver, or one doing an
// EVALSHA per event (see floor.go).
type FloorPhase struct {
	Mode       string    `json:"mode"` // reply or evalsha
	Inflight   int       `json:"inflight"`
	Quiet      Quiet     `json:"quiet"`
	WindowS    float64   `json:"window_s"`
	EventsPerS float64   `json:"events_per_s"`
	Latency    Latency   `json:"latency"`
	Errors     int64     `json:"errors"`
	FirstError string    `json:"first_error,omitempty"`
	BoxBusyPct float64   `json:"box_busy_pct"`
	CPU        []ProcCPU `json:"cpu"` // µs per event
	Redis      struct {
		CallsPerEvent float64 `json:"calls_per_event"`
		ReadsPerEvent float64 `json:"reads_per_event"`
	} `json:"redis"`
}

// Round is a loaded phase and the two floor phases run right after it.
type Round struct {
	Loaded       *SagaPhase  `json:"loaded"`
	FloorReply   *FloorPhase `json:"floor_reply"`
	FloorEvalsha *FloorPhase `json:"floor_evalsha"`
}

// RoundRatio is one round's figures against its own floor phases.
type RoundRatio struct {
	Round             int     `json:"round"` // 1-based
	SagasPerS         float64 `json:"sagas_per_s"`
	FloorSagasPerS    float64 `json:"floor_sagas_per_s"`
	ThroughputVsFloor float64 `json:"throughput_vs_floor"`
	BrokerUsPerHop    float64 `json:"broker_us_per_hop"`
	PlainUsPerEvent   float64 `json:"plain_receiver_us_per_event"`
	BrokerVsPlain     float64 `json:"broker_vs_plain"`
}

// Ratios express the saga figures against the same-run floor.
type Ratios struct {
	StepsPerSaga      float64 `json:"steps_per_saga"`
	DeliveriesPerSaga float64 `json:"deliveries_per_saga"`
	HopsPerSaga       float64 `json:"hops_per_saga"` // 1 ingress POST + deliveries
	FloorSagasPerS    float64 `json:"floor_sagas_per_s"`
	Formula           string  `json:"formula"`
	ThroughputVsFloor float64 `json:"throughput_vs_floor"`

	BrokerUsPerHop          float64 `json:"broker_us_per_hop"`
	PlainReceiverUsPerEvent float64 `json:"plain_receiver_us_per_event"`
	BrokerVsPlain           float64 `json:"broker_vs_plain"`

	FunctionUsPerStep         float64 `json:"function_us_per_step"`
	EvalshaReceiverUsPerEvent float64 `json:"evalsha_receiver_us_per_event"`
	FunctionVsEvalsha         float64 `json:"function_vs_evalsha"`

	RedisUsPerStep       float64 `json:"redis_us_per_step"`
	FloorRedisUsPerEvent float64 `json:"floor_redis_us_per_event"`
	RedisVsFloor         float64 `json:"redis_vs_floor"`
}

// Attribution is the MONITOR run: Redis commands by process.
type Attribution struct {
	Sagas      int64        `json:"sagas"`
	StepsTotal int64        `json:"steps_total"`
	Processes  []*ProcRedis `json:"processes"`
	// FunctionRoundTripsPerStep is the step-path round trips of every
	// function process (the lookups of functions called synchronously
	// included) per step.
	FunctionRoundTripsPerStep float64 `json:"function_round_trips_per_step"`
	// StepTypes are each function's step-path round trips per step, by
	// step type where the workload tells them apart (StepExtra).
	StepTypes []StepRoundTrips `json:"step_types"`
	// WorstStepPath is the step type with the most round trips on its path.
	WorstStepPath        string  `json:"worst_step_path"`
	WorstStepRoundTrips  float64 `json:"worst_step_round_trips"`
	BrokerRoundTripsStep float64 `json:"broker_round_trips_per_step"`
	Error                string  `json:"error,omitempty"`
}

// Target is one of the targets with the measured value.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Pass     *bool  `json:"pass"` // nil: not measured in this run
	Note     string `json:"note,omitempty"`
}
