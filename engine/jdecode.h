/*
 * jdecode.h - decoding JSON input documents (mentions, mapped inputs) into jansson values,
 * with yajl's lexer: about twice as fast as json_loadb on a 300-byte mention here
 * (bench/fpbench stages "decode"), with the same result and the same rejections.
 */
#ifndef FP_JDECODE_H
#define FP_JDECODE_H

#include <jansson.h>
#include <stddef.h>

/**
 * Decodes one JSON document, as json_loadb(buf, len, JSON_REJECT_DUPLICATES, ...) would:
 * an object or array at the top, nothing but whitespace after it, duplicate keys, "\u0000",
 * invalid UTF-8 and nesting deeper than 2048 rejected; integers that fit in json_int_t are
 * integers, other numbers reals. Values are made with jansson's allocator, so an arena
 * entered around the call (jarena.h) holds them.
 * @returns a new reference (the caller's: json_decref), or NULL with "at byte N: reason"
 *          in @p errstr.
 */
json_t *fp_json_decode(const void *buf, size_t len, char *errstr, size_t errstr_size);

#endif
