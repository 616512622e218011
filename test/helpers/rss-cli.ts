/**
 * Runs the CLI as bin/snapshot does, then prints the process's peak resident set (getrusage's
 * ru_maxrss, in KiB) on stderr as `peak-rss-kib N`: what a test asserts about a command's memory.
 */
const cli = await import('../../src/cli/main.js')
process.exitCode = await cli.main(process.argv)
process.stderr.write(`peak-rss-kib ${process.resourceUsage().maxRSS}\n`)
