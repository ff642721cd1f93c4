/* file_loop MODE N [ARG]: the file workloads of `make bench --only files`, each timed over
 * N operations. Prints the mean microseconds per operation, then `cpu_us T`: the CPU this
 * process used (user + system, eBPF programs in its context included).
 *   create N DIR     open(O_CREAT) + write 100 bytes + close of N new files in DIR
 *                    (removed again after the timing)
 *   open N PATH      N read-only open + close of PATH
 *   syscalls N       N times: getppid, and a 1-byte write and read through a pipe
 *   write_stamped DIR SRC   (N ignored) copies SRC to DIR/w<CLOCK_REALTIME ns>, mode 0755,
 *                    and prints that path and the CLOCK_REALTIME ns after its close: the
 *                    write-to-alert latency probe
 * Static, so it runs in a busybox-only image and on the host alike. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void report(double started, long n)
{
	double us = (now_us() - started) / (n > 0 ? n : 1);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 +
		     ru.ru_stime.tv_usec;
	printf("%.4f\ncpu_us %.0f\n", us, cpu);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: file_loop MODE N [ARG]\n");
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	char path[4096];
	char data[100];
	memset(data, 'x', sizeof(data));
	if (strcmp(mode, "create") == 0 && argc > 3) {
		double t = now_us();
		for (long i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/f%ld", argv[3], i);
			int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
			if (fd < 0 || write(fd, data, sizeof(data)) != sizeof(data)) {
				perror(path);
				return 1;
			}
			close(fd);
		}
		report(t, n);
		for (long i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/f%ld", argv[3], i);
			unlink(path);
		}
		return 0;
	}
	if (strcmp(mode, "open") == 0 && argc > 3) {
		double t = now_us();
		for (long i = 0; i < n; i++) {
			int fd = open(argv[3], O_RDONLY);
			if (fd < 0) {
				perror(argv[3]);
				return 1;
			}
			close(fd);
		}
		report(t, n);
		return 0;
	}
	if (strcmp(mode, "syscalls") == 0) {
		int p[2];
		char c = 'x';
		if (pipe(p) != 0)
			return 1;
		double t = now_us();
		for (long i = 0; i < n; i++) {
			getppid();
			if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
				return 1;
		}
		report(t, n);
		return 0;
	}
	if (strcmp(mode, "write_stamped") == 0 && argc > 4) {
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		snprintf(path, sizeof(path), "%s/w%lld%09ld", argv[3], (long long)t.tv_sec, t.tv_nsec);
		int in = open(argv[4], O_RDONLY);
		int out = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0755);
		if (in < 0 || out < 0) {
			perror("open");
			return 1;
		}
		char buf[65536];
		ssize_t r;
		while ((r = read(in, buf, sizeof(buf))) > 0)
			if (write(out, buf, r) != r)
				return 1;
		close(out);
		struct timespec done;
		clock_gettime(CLOCK_REALTIME, &done);
		printf("%s\n%lld%09ld\n", path, (long long)done.tv_sec, done.tv_nsec);
		return 0;
	}
	fprintf(stderr, "file_loop: bad mode or arguments\n");
	return 2;
}
