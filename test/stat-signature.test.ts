import assert from 'node:assert/strict'
import test from 'node:test'
import { modeOfSig, mtimeOfSig, permissionBitsOfSig, racySig, sigBytesHaveSetId, sizeOfSig } from '../src/fs/stat-signature.js'

test('modeOfSig and sizeOfSig read the carried mode and the size back', () => {
  assert.equal(modeOfSig('f 4755 213 1.0000000000 1.0000000000 7'), 0o755)
  assert.equal(modeOfSig('d 1777 4096 1.0000000000 1.0000000000 7'), 0o1777)
  assert.equal(sizeOfSig('f 644 213 1.0000000000 1.0000000000 7'), 213)
  assert.equal(sizeOfSig('f 644 213 racy'), 213)
})

test('permissionBitsOfSig keeps the setuid and setgid bits that modeOfSig drops', () => {
  assert.equal(permissionBitsOfSig('f 6755 213 1.0000000000 1.0000000000 7'), 0o6755)
  assert.equal(modeOfSig('f 6755 213 1.0000000000 1.0000000000 7'), 0o755)
})

test('a racy SIG keeps type, mode, size and mtime, and never equals the scan it came from', () => {
  const sig = 'f 644 213 1795257700.6313518810 1795257700.6313518820 9'
  const racy = racySig(sig)
  assert.equal(racy, 'f 644 213 1795257700.6313518810 racy')
  assert.notEqual(racy, sig)
  assert.equal(sizeOfSig(racy), 213)
  assert.equal(modeOfSig(racy), 0o644)
  assert.deepEqual(mtimeOfSig(racy), mtimeOfSig(sig))
})

test('sigBytesHaveSetId reads a setuid or setgid bit from the bytes, not the sticky bit', () => {
  const has = (sig: string): boolean => {
    const buf = Buffer.from(`${sig}\0path\0\0`, 'latin1')
    return sigBytesHaveSetId(buf, 0, sig.length + 1)
  }
  assert.equal(has('f 4755 1 1.0000000000 1.0000000000 7'), true)
  assert.equal(has('f 2755 1 1.0000000000 1.0000000000 7'), true)
  assert.equal(has('d 1777 1 1.0000000000 1.0000000000 7'), false)
  assert.equal(has('f 755 1 1.0000000000 1.0000000000 7'), false)
})
