/* codec.c - compiled model shapes, the pattern-trait regex subset, strict
 * UTF-8 counting and JSON writers for the codec (see codec.h). The regex
 * is parsed with the grammar of lua/kinesis/regex.lua (the reference) and
 * run as a Pike VM, so a pattern such as `^arn:aws.*:kinesis:.*:` costs
 * linear time whatever the input. */
#include "codec.h"

#include "base64.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ model */

void kn_model_free(kn_model *m)
{
  size_t i, j;
  if (m->shapes == NULL) return;
  for (i = 0; i < m->nshapes; i++) {
    kn_shape *s = &m->shapes[i];
    free(s->name);
    for (j = 0; j < s->nenum; j++) free(s->enums[j]);
    free(s->enums);
    free(s->enum_lens);
    kn_re_free(s->re);
    for (j = 0; j < s->nmembers; j++) {
      free(s->members[j].name);
      free(s->members[j].key_json);
    }
    free(s->members);
  }
  free(m->shapes);
  m->shapes = NULL;
  m->nshapes = 0;
}

int kn_codec_type(const char *t)
{
  static const struct { const char *name; int code; } names[] = {
    {"string", KN_CT_STRING},     {"blob", KN_CT_BLOB},
    {"boolean", KN_CT_BOOLEAN},   {"integer", KN_CT_INTEGER},
    {"long", KN_CT_LONG},         {"timestamp", KN_CT_TIMESTAMP},
    {"double", KN_CT_DOUBLE},     {"structure", KN_CT_STRUCTURE},
    {"union", KN_CT_UNION},       {"list", KN_CT_LIST},
    {"map", KN_CT_MAP},
  };
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(t, names[i].name) == 0) return names[i].code;
  return KN_CT_OTHER;
}

const kn_member *kn_codec_member(const kn_shape *s, const char *key, size_t n)
{
  size_t lo = 0, hi = s->nmembers;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const kn_member *m = &s->members[mid];
    size_t k = n < m->name_len ? n : m->name_len;
    int c = memcmp(key, m->name, k);
    if (c == 0) c = n < m->name_len ? -1 : n > m->name_len ? 1 : 0;
    if (c == 0) return m;
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

/* ------------------------------------------------------------------ regex */

/* AST, then code: SET (a 256-bit byte set), SPLIT (two ways on), JMP, BOL,
 * EOL, MATCH. Counted repetition copies its atom, as {0,128} is the
 * largest count in the model. */
enum { N_SET, N_SEQ, N_ALT, N_BOL, N_EOL, N_REP };
enum { I_SET, I_SPLIT, I_JMP, I_BOL, I_EOL, I_MATCH };

#define RE_MAX_CODE 20000
#define RE_MAX_COUNT 1000
#define RE_INF (-1)

typedef struct re_node {
  int kind;
  unsigned char set[32];
  struct re_node **kids;
  size_t nkids;
  int min, max;
} re_node;

typedef struct re_inst {
  int op;
  int x, y;         /* jump targets, or the set index for I_SET */
} re_inst;

struct kn_regex {
  re_inst *code;
  size_t ncode;
  unsigned char (*sets)[32];
  size_t nsets;
  /* VM scratch */
  int *cur, *next, *stack;
  unsigned *mark;
  unsigned gen;
};

typedef struct re_parser {
  const char *src;
  size_t n, pos;
  const char *why;
  int nomem;
} re_parser;

static void set_add(unsigned char *s, int b) { s[b >> 3] |= (unsigned char)(1u << (b & 7)); }
static int set_has(const unsigned char *s, int b) { return (s[b >> 3] >> (b & 7)) & 1; }

static int is_digit(int b) { return b >= '0' && b <= '9'; }
static int is_word(int b)
{
  return is_digit(b) || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b == '_';
}
static int is_space(int b) { return b == ' ' || (b >= 9 && b <= 13); }
static int is_alnum(int b) { return is_digit(b) || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z'); }

static void node_free(re_node *nd)
{
  size_t i;
  if (nd == NULL) return;
  for (i = 0; i < nd->nkids; i++) node_free(nd->kids[i]);
  free(nd->kids);
  free(nd);
}

static re_node *node_new(re_parser *p, int kind)
{
  re_node *nd = calloc(1, sizeof *nd);
  if (nd == NULL) {
    p->nomem = 1;
    return NULL;
  }
  nd->kind = kind;
  return nd;
}

static int node_add(re_parser *p, re_node *parent, re_node *kid)
{
  re_node **k = realloc(parent->kids, (parent->nkids + 1) * sizeof *k);
  if (k == NULL) {
    p->nomem = 1;
    node_free(kid);
    return -1;
  }
  parent->kids = k;
  k[parent->nkids++] = kid;
  return 0;
}

static int peek(const re_parser *p) { return p->pos < p->n ? (unsigned char)p->src[p->pos] : -1; }

static int fail(re_parser *p, const char *why)
{
  if (p->why == NULL) p->why = why;
  return -1;
}

/* After a backslash: fills set; 0 ok, -1 syntax. */
static int parse_escape(re_parser *p, unsigned char *set)
{
  int c = peek(p), b;
  int (*pred)(int) = NULL;
  int neg = 0;
  if (c < 0) return fail(p, "dangling backslash");
  p->pos++;
  switch (c) {
  case 'd': pred = is_digit; break;
  case 'D': pred = is_digit; neg = 1; break;
  case 'w': pred = is_word; break;
  case 'W': pred = is_word; neg = 1; break;
  case 's': pred = is_space; break;
  case 'S': pred = is_space; neg = 1; break;
  default:
    if (is_alnum(c)) return fail(p, "unsupported escape");
    set_add(set, c);
    return 0;
  }
  for (b = 0; b < 256; b++)
    if ((pred(b) != 0) != neg) set_add(set, b);
  return 0;
}

static int set_single(const unsigned char *s)
{
  int b, found = -1, n = 0;
  for (b = 0; b < 256; b++)
    if (set_has(s, b)) {
      n++;
      found = b;
    }
  return n == 1 ? found : -1;
}

static int set_first(const unsigned char *s)
{
  int b;
  for (b = 0; b < 256; b++)
    if (set_has(s, b)) return b;
  return -1;
}

/* After '[': the class into set. */
static int parse_class(re_parser *p, unsigned char *set)
{
  int negate = 0, first = 1, b;
  if (peek(p) == '^') {
    negate = 1;
    p->pos++;
  }
  for (;;) {
    int c = peek(p), lo = -1;
    if (c < 0) return fail(p, "unterminated class");
    p->pos++;
    if (c == ']' && !first) break;
    first = 0;
    if (c == '\\') {
      unsigned char s[32];
      memset(s, 0, sizeof s);
      if (parse_escape(p, s) != 0) return -1;
      lo = set_single(s);
      if (lo < 0)
        for (b = 0; b < 32; b++) set[b] |= s[b];
    } else {
      lo = c;
    }
    if (lo >= 0) {
      if (peek(p) == '-' && p->pos + 1 < p->n && p->src[p->pos + 1] != ']') {
        int hc, hi;
        p->pos++;
        hc = peek(p);
        p->pos++;
        if (hc == '\\') {
          unsigned char s[32];
          memset(s, 0, sizeof s);
          if (parse_escape(p, s) != 0) return -1;
          hi = set_first(s);
        } else {
          hi = hc;
        }
        if (hi < lo) return fail(p, "bad range");
        for (b = lo; b <= hi; b++) set_add(set, b);
      } else {
        set_add(set, lo);
      }
    }
  }
  if (negate)
    for (b = 0; b < 32; b++) set[b] = (unsigned char)~set[b];
  return 0;
}

static re_node *parse_alt(re_parser *p);

/* {m}, {m,} or {m,n} at pos (on '{'); 1 and advances when it is one. */
static int parse_count(re_parser *p, int *min, int *max)
{
  size_t i = p->pos + 1;
  long a = 0, b = 0;
  int digits = 0, bdigits = 0, comma = 0;
  while (i < p->n && is_digit((unsigned char)p->src[i])) {
    if (a <= RE_MAX_COUNT) a = a * 10 + (p->src[i] - '0');
    i++;
    digits++;
  }
  if (digits == 0) return 0;
  if (i < p->n && p->src[i] == ',') {
    comma = 1;
    i++;
    while (i < p->n && is_digit((unsigned char)p->src[i])) {
      if (b <= RE_MAX_COUNT) b = b * 10 + (p->src[i] - '0');
      i++;
      bdigits++;
    }
  }
  if (i >= p->n || p->src[i] != '}') return 0;
  *min = (int)(a > RE_MAX_COUNT ? RE_MAX_COUNT + 1 : a);
  *max = !comma ? *min : bdigits == 0 ? RE_INF : (int)(b > RE_MAX_COUNT ? RE_MAX_COUNT + 1 : b);
  p->pos = i; /* on '}': the caller steps over it */
  return 1;
}

static re_node *parse_seq(re_parser *p)
{
  re_node *seq = node_new(p, N_SEQ);
  if (seq == NULL) return NULL;
  for (;;) {
    int c = peek(p), q, min = -2, max = 0;
    re_node *atom = NULL;
    if (c < 0 || c == '|' || c == ')') break;
    p->pos++;
    if (c == '^') atom = node_new(p, N_BOL);
    else if (c == '$') atom = node_new(p, N_EOL);
    else if (c == '.') {
      atom = node_new(p, N_SET);
      if (atom != NULL) {
        int b;
        for (b = 0; b < 256; b++)
          if (b != '\n' && b != '\r') set_add(atom->set, b);
      }
    } else if (c == '[') {
      atom = node_new(p, N_SET);
      if (atom != NULL && parse_class(p, atom->set) != 0) goto bad;
    } else if (c == '\\') {
      atom = node_new(p, N_SET);
      if (atom != NULL && parse_escape(p, atom->set) != 0) goto bad;
    } else if (c == '(') {
      if (p->pos + 1 < p->n && p->src[p->pos] == '?' && p->src[p->pos + 1] == ':') p->pos += 2;
      atom = parse_alt(p);
      if (atom == NULL) goto bad;
      if (peek(p) != ')') {
        fail(p, "missing )");
        goto bad;
      }
      p->pos++;
    } else if (c == '*' || c == '+' || c == '?' || c == '{') {
      fail(p, "nothing to repeat");
      goto bad;
    } else {
      atom = node_new(p, N_SET);
      if (atom != NULL) set_add(atom->set, c);
    }
    if (atom == NULL) goto bad;
    q = peek(p);
    if (q == '*') min = 0, max = RE_INF;
    else if (q == '+') min = 1, max = RE_INF;
    else if (q == '?') min = 0, max = 1;
    else if (q == '{' && !parse_count(p, &min, &max)) min = -2;
    if (min != -2) {
      re_node *rep;
      p->pos++;
      if (peek(p) == '?') {
        fail(p, "lazy quantifiers are not supported");
        goto bad;
      }
      if (min > RE_MAX_COUNT || max > RE_MAX_COUNT) {
        fail(p, "repetition count too large");
        goto bad;
      }
      rep = node_new(p, N_REP);
      if (rep == NULL) goto bad;
      rep->min = min;
      rep->max = max;
      if (node_add(p, rep, atom) != 0) {
        atom = NULL;
        node_free(rep);
        goto bad;
      }
      atom = rep;
    }
    if (node_add(p, seq, atom) != 0) {
      atom = NULL;
      goto bad;
    }
    continue;
  bad:
    node_free(atom);
    node_free(seq);
    return NULL;
  }
  return seq;
}

static re_node *parse_alt(re_parser *p)
{
  re_node *first = parse_seq(p), *alt;
  if (first == NULL || peek(p) != '|') return first;
  alt = node_new(p, N_ALT);
  if (alt == NULL || node_add(p, alt, first) != 0) {
    if (alt == NULL) node_free(first);
    node_free(alt);
    return NULL;
  }
  while (peek(p) == '|') {
    re_node *br;
    p->pos++;
    br = parse_seq(p);
    if (br == NULL || node_add(p, alt, br) != 0) {
      node_free(alt);
      return NULL;
    }
  }
  return alt;
}

typedef struct re_emit {
  kn_regex *re;
  size_t cap, setcap;
  int nomem, toolong;
} re_emit;

static int emit(re_emit *e, int op, int x, int y)
{
  re_inst *c;
  if (e->re->ncode >= RE_MAX_CODE) {
    e->toolong = 1;
    return -1;
  }
  if (e->re->ncode == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 32;
    c = realloc(e->re->code, cap * sizeof *c);
    if (c == NULL) {
      e->nomem = 1;
      return -1;
    }
    e->re->code = c;
    e->cap = cap;
  }
  c = &e->re->code[e->re->ncode];
  c->op = op;
  c->x = x;
  c->y = y;
  return (int)e->re->ncode++;
}

static int add_set(re_emit *e, const unsigned char *set)
{
  size_t i;
  for (i = 0; i < e->re->nsets; i++)
    if (memcmp(e->re->sets[i], set, 32) == 0) return (int)i;
  if (e->re->nsets == e->setcap) {
    size_t cap = e->setcap ? e->setcap * 2 : 8;
    unsigned char(*s)[32] = realloc(e->re->sets, cap * sizeof *s);
    if (s == NULL) {
      e->nomem = 1;
      return -1;
    }
    e->re->sets = s;
    e->setcap = cap;
  }
  memcpy(e->re->sets[e->re->nsets], set, 32);
  return (int)e->re->nsets++;
}

static int gen(re_emit *e, const re_node *nd)
{
  size_t i;
  int k, s;
  switch (nd->kind) {
  case N_SET:
    s = add_set(e, nd->set);
    return s < 0 ? -1 : emit(e, I_SET, s, 0) < 0 ? -1 : 0;
  case N_BOL: return emit(e, I_BOL, 0, 0) < 0 ? -1 : 0;
  case N_EOL: return emit(e, I_EOL, 0, 0) < 0 ? -1 : 0;
  case N_SEQ:
    for (i = 0; i < nd->nkids; i++)
      if (gen(e, nd->kids[i]) != 0) return -1;
    return 0;
  case N_ALT: {
    /* split L1, next; L1: branch; jmp end; next: ... ; the jumps to end
     * are patched when the last branch is out */
    int *jumps = malloc(nd->nkids * sizeof *jumps), rc = -1;
    size_t nj = 0;
    if (jumps == NULL) {
      e->nomem = 1;
      return -1;
    }
    for (i = 0; i < nd->nkids; i++) {
      int split = -1;
      if (i + 1 < nd->nkids) {
        split = emit(e, I_SPLIT, 0, 0);
        if (split < 0) goto alt_done;
        e->re->code[split].x = (int)e->re->ncode;
      }
      if (gen(e, nd->kids[i]) != 0) goto alt_done;
      if (i + 1 < nd->nkids) {
        int j = emit(e, I_JMP, 0, 0);
        if (j < 0) goto alt_done;
        jumps[nj++] = j;
        e->re->code[split].y = (int)e->re->ncode;
      }
    }
    for (i = 0; i < nj; i++) e->re->code[jumps[i]].x = (int)e->re->ncode;
    rc = 0;
  alt_done:
    free(jumps);
    return rc;
  }
  case N_REP: {
    const re_node *kid = nd->kids[0];
    for (k = 0; k < nd->min; k++)
      if (gen(e, kid) != 0) return -1;
    if (nd->max == RE_INF) {
      int loop = emit(e, I_SPLIT, 0, 0);
      if (loop < 0) return -1;
      e->re->code[loop].x = (int)e->re->ncode;
      if (gen(e, kid) != 0 || emit(e, I_JMP, loop, 0) < 0) return -1;
      e->re->code[loop].y = (int)e->re->ncode;
    } else {
      int n = nd->max - nd->min, *splits;
      if (n <= 0) return 0;
      splits = malloc((size_t)n * sizeof *splits);
      if (splits == NULL) {
        e->nomem = 1;
        return -1;
      }
      for (k = 0; k < n; k++) {
        int sp = emit(e, I_SPLIT, 0, 0);
        if (sp < 0) {
          free(splits);
          return -1;
        }
        splits[k] = sp;
        e->re->code[sp].x = (int)e->re->ncode;
        if (gen(e, kid) != 0) {
          free(splits);
          return -1;
        }
      }
      for (k = 0; k < n; k++) e->re->code[splits[k]].y = (int)e->re->ncode;
      free(splits);
    }
    return 0;
  }
  default: return -1;
  }
}

void kn_re_free(kn_regex *re)
{
  if (re == NULL) return;
  free(re->code);
  free(re->sets);
  free(re->cur);
  free(re->next);
  free(re->stack);
  free(re->mark);
  free(re);
}

int kn_re_compile(const char *src, size_t n, kn_regex **out, const char **why)
{
  re_parser p;
  re_emit e;
  re_node *ast;
  kn_regex *re;
  *out = NULL;
  if (why != NULL) *why = NULL;
  memset(&p, 0, sizeof p);
  p.src = src;
  p.n = n;
  ast = parse_alt(&p);
  if (ast != NULL && p.pos < p.n) {
    fail(&p, "unexpected character");
    node_free(ast);
    ast = NULL;
  }
  if (ast == NULL) {
    if (why != NULL) *why = p.nomem ? "out of memory" : p.why;
    return p.nomem ? -1 : -2;
  }
  re = calloc(1, sizeof *re);
  memset(&e, 0, sizeof e);
  e.re = re;
  if (re == NULL || gen(&e, ast) != 0 || emit(&e, I_MATCH, 0, 0) < 0) goto nomem;
  node_free(ast);
  ast = NULL;
  re->cur = malloc(re->ncode * sizeof *re->cur);
  re->next = malloc(re->ncode * sizeof *re->next);
  re->stack = malloc((2 * re->ncode + 2) * sizeof *re->stack);
  re->mark = calloc(re->ncode, sizeof *re->mark);
  if (re->cur == NULL || re->next == NULL || re->stack == NULL || re->mark == NULL) goto nomem;
  *out = re;
  return 0;
nomem:
  node_free(ast);
  if (e.toolong) {
    kn_re_free(re);
    if (why != NULL) *why = "pattern too long";
    return -2;
  }
  kn_re_free(re);
  if (why != NULL) *why = "out of memory";
  return -1;
}

/* Adds pc and its epsilon closure at position i to list (count *nl);
 * 1 when MATCH is reached. */
static int addthread(kn_regex *re, int *list, size_t *nl, int pc0, size_t i, size_t n)
{
  size_t sp = 0;
  re->stack[sp++] = pc0;
  while (sp > 0) {
    int pc = re->stack[--sp];
    const re_inst *in;
    if (re->mark[pc] == re->gen) continue;
    re->mark[pc] = re->gen;
    in = &re->code[pc];
    switch (in->op) {
    case I_MATCH: return 1;
    case I_JMP: re->stack[sp++] = in->x; break;
    case I_SPLIT:
      re->stack[sp++] = in->y;
      re->stack[sp++] = in->x;
      break;
    case I_BOL:
      if (i == 0) re->stack[sp++] = pc + 1;
      break;
    case I_EOL:
      if (i == n) re->stack[sp++] = pc + 1;
      break;
    default: list[(*nl)++] = pc; break;
    }
  }
  return 0;
}

static void next_gen(kn_regex *re)
{
  if (++re->gen == 0) {
    memset(re->mark, 0, re->ncode * sizeof *re->mark);
    re->gen = 1;
  }
}

int kn_re_test(kn_regex *re, const char *s, size_t n)
{
  size_t ncur = 0, i, k;
  /* the stack never holds more than one entry per instruction and mark */
  next_gen(re);
  if (addthread(re, re->cur, &ncur, 0, 0, n)) return 1;
  for (i = 0; i < n; i++) {
    size_t nnext = 0;
    int b = (unsigned char)s[i];
    int *t;
    next_gen(re);
    for (k = 0; k < ncur; k++) {
      const re_inst *in = &re->code[re->cur[k]];
      if (set_has(re->sets[in->x], b) &&
          addthread(re, re->next, &nnext, re->cur[k] + 1, i + 1, n))
        return 1;
    }
    /* unanchored: a new attempt starts at every position */
    if (addthread(re, re->next, &nnext, 0, i + 1, n)) return 1;
    t = re->cur;
    re->cur = re->next;
    re->next = t;
    ncur = nnext;
  }
  return 0;
}

/* ------------------------------------------------------------------ UTF-8 */

long kn_utf8_length(const char *str, size_t n)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  long count = 0;
  while (i < n) {
    unsigned c = s[i];
    unsigned cp, min;
    int extra, k;
    if (c < 0x80) {
      /* ASCII runs are the common case: eight bytes a step */
      i++;
      count++;
      while (n - i >= 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (x & 0x8080808080808080u) break;
        i += 8;
        count += 8;
      }
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) extra = 1, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) extra = 2, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) extra = 3, min = 0x10000, cp = c & 0x07;
    else return -1;
    if (n - i <= (size_t)extra) return -1;
    for (k = 1; k <= extra; k++) {
      unsigned d = s[i + (size_t)k];
      if (d < 0x80 || d > 0xBF) return -1;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    i += (size_t)extra + 1;
    count++;
  }
  return count;
}

/* ------------------------------------------------------------------- JSON */

/* 0: copy as is; otherwise the escape's second character, or 'u' */
static const char json_esc[256] = {
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
  0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '/',
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'u',
};

int kn_json_put_string(kn_buf *b, const char *s, size_t n)
{
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;
  char *o;
  /* worst case 6 bytes per input byte, plus the quotes */
  if (n > ((size_t)-1 - 2) / 6 || kn_buf_reserve(b, n * 6 + 2) != 0) return -1;
  o = b->data + b->len;
  *o++ = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char e = json_esc[c];
    if (e == 0) {
      run++;
      continue;
    }
    if (run) {
      memcpy(o, s + i - run, run);
      o += run;
      run = 0;
    }
    *o++ = '\\';
    *o++ = e;
    if (e == 'u') {
      *o++ = '0';
      *o++ = '0';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    }
  }
  if (run) {
    memcpy(o, s + n - run, run);
    o += run;
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  b->data[b->len] = '\0';
  return 0;
}

int kn_json_put_integer(kn_buf *b, long long v)
{
  char tmp[32];
  int k = snprintf(tmp, sizeof tmp, "%lld", v);
  return kn_buf_append(b, tmp, (size_t)k);
}

int kn_json_put_number(kn_buf *b, double v)
{
  char tmp[400];
  int k;
  if (v == floor(v) && v > -9223372036854775808.0 && v < 9223372036854775808.0)
    return kn_json_put_integer(b, (long long)v);
  k = snprintf(tmp, sizeof tmp, "%.6f", v);
  if (k < 0 || (size_t)k >= sizeof tmp) return -1;
  while (k > 0 && tmp[k - 1] == '0') k--;
  return kn_buf_append(b, tmp, (size_t)k);
}

/* ----------------------------------------------------------------- base64 */

static const char b64_alphabet[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void kn_b64_tables_init(kn_b64_tables *t)
{
  int i;
  for (i = 0; i < 4096; i++) {
    t->pair[i][0] = b64_alphabet[i >> 6];
    t->pair[i][1] = b64_alphabet[i & 63];
  }
  memset(t->value, 0xFF, sizeof t->value);
  for (i = 0; i < 64; i++) t->value[(unsigned char)b64_alphabet[i]] = (unsigned char)i;
}

void kn_b64_fast_encode(const kn_b64_tables *t, const unsigned char *in, size_t n, char *out)
{
  size_t i = 0;
  for (; i + 3 <= n; i += 3, out += 4) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    memcpy(out, t->pair[v >> 12], 2);
    memcpy(out + 2, t->pair[v & 0xFFF], 2);
  }
  if (i < n) /* the last one or two bytes: the reference encoder pads */
    kn_b64_encode(in + i, n - i, out);
}

int kn_b64_fast_decode(const kn_b64_tables *t, const char *in, size_t n, unsigned char *out,
                       size_t *out_len)
{
  const unsigned char *s = (const unsigned char *)in;
  size_t i, o = 0, tail;
  if (n % 4 != 0) return -1;
  if (n == 0) {
    *out_len = 0;
    return 0;
  }
  /* every group but the last has no padding: four table lookups */
  for (i = 0; i + 4 < n; i += 4) {
    unsigned a = t->value[s[i]], b = t->value[s[i + 1]], c = t->value[s[i + 2]],
             d = t->value[s[i + 3]];
    if ((a | b | c | d) & 0x80) return -1;
    out[o] = (unsigned char)(a << 2 | b >> 4);
    out[o + 1] = (unsigned char)(b << 4 | c >> 2);
    out[o + 2] = (unsigned char)(c << 6 | d);
    o += 3;
  }
  /* the last group (padding, canonical unused bits): the strict decoder */
  if (kn_b64_decode(in + i, 4, out + o, &tail, NULL) != KN_B64_OK) return -1;
  *out_len = o + tail;
  return 0;
}
