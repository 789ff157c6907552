/*
 * demo.h - `flashpoint demo`: the engine end to end on embedded defaults (see demo.c).
 */
#ifndef FP_DEMO_H
#define FP_DEMO_H

/** Runs the demo with the arguments after "demo". @returns the process exit code. */
int fp_demo_main(int argc, char **argv);

#endif
