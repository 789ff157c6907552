/*
 * silence.h - `flashpoint silence`: mute paging for one (rule, entity) for a while.
 */
#ifndef FP_SILENCE_H
#define FP_SILENCE_H

/** Runs the command with the arguments after "silence". @returns the exit code. */
int fp_silence_main(int argc, char **argv);

#endif
