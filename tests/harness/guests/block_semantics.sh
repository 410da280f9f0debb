G=@GUESTS@
echo "== stat"; stat -c "%F %a %u:%g %t:%T %s %b %B %o %h" /dev/ubda /dev/ubdb; stat -L -c "%F %t:%T" /dev/ubda; python3 -c "import os; s = os.statvfs(\"/dev/ubda\"); print(s.f_bsize > 0)"
echo "== blockdev"; blockdev --getsize64 --getsz --getss --getpbsz --getbsz --getro --getiomin --getioopt --getalignoff --getdiscardzeroes /dev/ubda; blockdev --getro --getsize64 /dev/ubdb
echo "== dd"
dd if=/dev/zero of=/dev/ubda bs=512 seek=3 count=2 2>&1 | grep -v copied
dd if=b.img of=pattern bs=4096 skip=3 count=8 2>/dev/null
dd if=pattern of=/dev/ubda bs=4096 seek=10 count=4 oflag=direct 2>&1 | grep -v copied
dd if=pattern of=/dev/ubda bs=1000 seek=7 count=3 oflag=direct 2>&1 | grep -v copied
printf hello | dd of=/dev/ubda bs=1 seek=20000 conv=notrunc 2>&1 | grep -v copied
dd if=pattern of=/dev/ubda bs=1M seek=3 conv=notrunc 2>&1 | grep -v copied
dd if=/dev/ubda bs=1M count=1 2>/dev/null | md5sum
dd if=/dev/ubda bs=4096 iflag=direct skip=10 count=4 2>/dev/null | md5sum
dd if=/dev/ubda bs=1M 2>/dev/null | md5sum
dd if=/dev/ubda of=/dev/null bs=512 skip=8192 count=1 2>&1 | grep -v copied
dd if=/dev/zero of=/dev/ubda bs=512 seek=8192 count=1 2>&1 | grep -v copied
dd if=/dev/zero of=/dev/ubdb bs=512 count=1 2>&1 | grep -v copied
echo "== probe"; python3 $G/probe.py
echo "== threads"; python3 $G/threads.py; echo "status $?"
echo "== pipeline"
cat /dev/ubda | tail -c +1048577 | head -c 100000 | md5sum
dd if=/dev/ubdb bs=64k 2>/dev/null | dd of=/dev/ubda bs=64k seek=16 conv=notrunc 2>/dev/null
dd if=/dev/ubda bs=64k skip=16 count=16 2>/dev/null | md5sum
(exec 3<>/dev/ubda; dd bs=512 count=1 <&3 2>/dev/null | md5sum; dd bs=512 count=1 <&3 2>/dev/null | md5sum; printf end >&3; sh -c 'dd bs=512 count=1 <&3 2>/dev/null' | md5sum)
echo "== sfdisk"
printf 'label: dos\nlabel-id: 0x12345678\n,2M,L\n,,L\n' | sfdisk --no-reread /dev/ubda 2>&1 | grep -v '^$'
sfdisk -d /dev/ubda
echo "== end"
