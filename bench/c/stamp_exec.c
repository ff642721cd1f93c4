/* Prints CLOCK_REALTIME in nanoseconds, then execs argv[1..]: the start of an exec-to-alert
 * latency measurement (alerts carry RFC 3339 wall-clock times). */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
	fflush(stdout);
	execv(argv[1], argv + 1);
	return 127;
}
