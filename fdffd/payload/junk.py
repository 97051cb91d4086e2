"""Files and folders an operating system, a desktop or an editor leaves behind (pure).

They are not content, and most of them say something about the computer or the person the
payload came from: a Windows shortcut holds the machine's name and paths, an Office lock file
the user's name, a thumbnail cache pictures that were deleted, a version-control folder every
author's name and e-mail.  An import refuses them (``fdffd.payload.source``), naming each one.

Names are compared case-insensitively (``Thumbs.db``, ``THUMBS.DB`` and ``thumbs.db`` are one
rule: FAT and exFAT fold case, and so do the systems that write these files).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

#: (glob, what it is).  Globs use ``fnmatch``'s ``*`` and ``?``; each is compared with the
#: name folded to lower case (``str.casefold``).  Folders and files alike.
JUNK_RULES: tuple[tuple[str, str], ...] = (
    # macOS
    (".DS_Store", "the macOS Finder's folder settings"),
    ("._*", "a macOS AppleDouble file (resource fork and Finder data of another file)"),
    ("__MACOSX", "the macOS resource forks a Finder zip carries"),
    (".AppleDouble", "a macOS resource-fork folder (on a network share)"),
    (".AppleDB", "a macOS file-sharing database"),
    (".AppleDesktop", "a macOS file-sharing desktop database"),
    (".Spotlight-V100", "the macOS Spotlight index of a drive"),
    (".Trashes", "the macOS trash of a drive"),
    (".fseventsd", "the macOS file-event log of a drive"),
    (".TemporaryItems", "macOS temporary files of a drive"),
    (".DocumentRevisions-V100", "the macOS document version store of a drive"),
    (".VolumeIcon.icns", "a macOS drive icon"),
    (".com.apple.timemachine.*", "a macOS Time Machine marker"),
    (".apdisk", "a macOS file-sharing marker"),
    (".LSOverride", "a macOS Launch Services setting"),
    ("Network Trash Folder", "a macOS file-sharing trash"),
    ("Temporary Items", "macOS file-sharing temporary files"),
    # Windows
    ("Thumbs.db", "the Windows Explorer thumbnail cache (holds pictures of deleted files)"),
    ("ehthumbs*.db", "the Windows Media Center thumbnail cache"),
    ("desktop.ini", "Windows Explorer's folder settings"),
    ("*.lnk", "a Windows shortcut (holds the computer's name, its paths and volume serial)"),
    ("$RECYCLE.BIN", "the Windows recycle bin of a drive"),
    ("RECYCLER", "the Windows XP recycle bin of a drive"),
    ("RECYCLED", "the Windows 9x recycle bin of a drive"),
    ("System Volume Information", "Windows' restore points and index of a drive"),
    ("~$*", "a Microsoft Office owner file (holds the name of the person editing)"),
    ("AlbumArt_{*}_*.jpg", "Windows Media Player's album art cache"),
    ("AlbumArtSmall.jpg", "Windows Media Player's album art cache"),
    ("FOUND.[0-9][0-9][0-9]", "pieces of files chkdsk recovered"),
    # Linux desktops, LibreOffice, editors, other tools
    (".Trash-*", "a Linux desktop's trash on a drive (.Trash-1000)"),
    (".directory", "KDE Dolphin's folder settings"),
    (".thumbnails", "a Linux thumbnail cache"),
    (".~lock.*#", "a LibreOffice lock file (holds the name of the person editing)"),
    (".fuse_hidden*", "a file FUSE kept open after it was deleted"),
    (".goutputstream-*", "a GNOME half-written temporary file"),
    (".*.sw[a-p]", "a vim swap file (holds the user's name, the computer's and the path)"),
    ("lost+found", "the files a filesystem check recovered"),
    (".picasa.ini", "Picasa's folder settings (holds people's names from face tags)"),
    ("picasa.ini", "Picasa's folder settings (holds people's names from face tags)"),
    (".BridgeCache", "Adobe Bridge's cache"),
    (".BridgeCacheT", "Adobe Bridge's cache"),
    (".BridgeSort", "Adobe Bridge's sort order"),
    (".dropbox", "a Dropbox marker (holds the account's folder id)"),
    (".dropbox.attr", "a Dropbox marker"),
    (".dropbox.cache", "Dropbox's cache"),
    (".git", "a git repository (every commit names its author and e-mail)"),
    (".svn", "a Subversion working copy (names its authors and server)"),
    (".hg", "a Mercurial repository (every commit names its author)"),
)

_FOLDED = tuple((glob.casefold(), what) for glob, what in JUNK_RULES)


def junk_reason(name: str) -> str | None:
    """What ``name`` (one path component) is when it is left-behind junk, else None.
    Compared case-insensitively."""
    folded = name.casefold()
    for glob, what in _FOLDED:
        if fnmatchcase(folded, glob):
            return what
    return None
