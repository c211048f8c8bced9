"""Monitoring and operations: request analytics, snapshot history, admission,
background tasks, benchmarks, memory analysis, reports and emergency mode.

Modules (the package import stays light: the metrics middleware imports
analytics on the hot path's module load):
    analytics   per-route accumulators fed by service/middleware/metrics.py
    snapshot    one snapshot from measurements; merging snapshots
    history     bounded minute history + hourly roll-ups, Redis/file persistence
    monitor     the process's Monitor (timers, history, tasks, benchmarks)
    tasks       background task pool (BACKGROUND_WORKERS, TASK_QUEUE_SIZE, WORKER_TIMEOUT)
    benchmark   self-benchmark jobs, baselines, regression comparison
    loadgen     the benchmark's load generator (runs as a child process)
    memory      memory analysis, tracemalloc hotspots, GC
    report      slow endpoints, request patterns, bottlenecks, trends, opportunities
    emergency   emergency mode on/off through one atomic config change
    kpi_status  the KPI table's current values (observability)
"""
