/* l_fs.c - durable file replacement for the checkpoint file store: write a
 * temporary file, fsync it, rename it over the target, fsync the directory,
 * so after a crash the target holds either the old or the new content, never
 * a mix. Plain Lua has no fsync; io's flush only reaches the kernel. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lbind.h"
#include "l_util.h"

/* Writes all `len` bytes of `data` to `fd`; returns 0 or an errno value. */
static int fs_write_all(int fd, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* fsyncs the directory holding `path` (a copy of it is cut in `buf`, which
 * the caller owns and sizes); returns 0 or an errno value. */
static int fs_sync_dir(const char *path, char *buf, size_t bufsize)
{
  const char *slash = strrchr(path, '/');
  int fd, rc = 0;
  if (!slash) {
    strcpy(buf, ".");
  } else if (slash == path) {
    strcpy(buf, "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (n >= bufsize) return ENAMETOOLONG;
    memcpy(buf, path, n);
    buf[n] = '\0';
  }
  fd = open(buf, O_RDONLY);
  if (fd < 0) return errno;
  if (fsync(fd) != 0 && errno != EINVAL) rc = errno;
  close(fd);
  return rc;
}

/* write_atomic(path, data) -> true | nil, err. The temporary file is
 * path .. ".tmp"; it is removed on failure. */
static int l_write_atomic(lua_State *L)
{
  size_t plen, dlen;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &dlen);
  char tmp[4096], dir[4096];
  const char *step = "open";
  const char *name = tmp;   /* the file the failed step was about */
  int fd, err = 0;
  if (plen + 5 > sizeof tmp || strlen(path) != plen)
    return kn_fail(L, "invalid_path", "path too long or holds a NUL byte");
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    err = errno;
    goto fail;
  }
  step = "write";
  err = fs_write_all(fd, data, dlen);
  if (!err) {
    step = "fsync";
    if (fsync(fd) != 0) err = errno;
  }
  if (close(fd) != 0 && !err) {
    step = "close";
    err = errno;
  }
  if (err) {
    unlink(tmp);
    goto fail;
  }
  step = "rename";
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    goto fail;
  }
  step = "fsync of the directory";
  err = fs_sync_dir(path, dir, sizeof dir);
  name = dir;
  if (err) goto fail;
  lua_pushboolean(L, 1);
  return 1;
fail:
  return kn_failf(L, "io_error", "%s %s: %s", step, name, strerror(err));
}

int kn_open_fs(lua_State *L)
{
  lua_pushcfunction(L, l_write_atomic);
  lua_setfield(L, -2, "write_atomic");
  return 0;
}
