"""Plans: the stack a user wants to run, the solver that places it on servers, and the saved plan file."""

# Threads that search option kinds side by side (planner.plan.recommend) carry this name prefix: the CLI's
# Ctrl-C handler ends the process at once while one may be inside HiGHS (planner.cli._errors).
SEARCH_THREAD_PREFIX = "agiplan-search"
