/* Execs argv[1] with CLOCK_REALTIME in nanoseconds as its first argument: the start of an
 * exec-to-alert latency measurement (alerts carry RFC 3339 wall-clock times, and the
 * alert's argv carries the start back). Nothing is written before the exec: a write to
 * ctr's stdout pipe would wake the shim on the other CPU just when the daemon should run,
 * and would count in a latency that is meant to start at the exec syscall. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	char stamp[32];
	char *args[] = {argv[1], stamp, NULL};
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	snprintf(stamp, sizeof(stamp), "%lld", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
	execv(argv[1], args);
	return 127;
}
