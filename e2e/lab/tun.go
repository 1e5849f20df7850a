package lab

import (
	"os"

	"golang.org/x/sys/unix"
)

// openTUN creates TUN device name in the calling thread's namespace,
// without packet information header or offloads: each read and write is
// exactly one IPv4 or IPv6 packet. The file is non-blocking, so that the
// Go poller serves it and Close interrupts a pending Read. The device
// disappears when the file is closed.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
