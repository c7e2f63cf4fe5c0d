"""HLS packaging details: RFC 6381 strings, playlist text, segment grouping and the keyframe timeline."""
from __future__ import annotations

from fractions import Fraction

import pytest

from streamforge.pipeline import hls
from streamforge.pipeline.ladder import PipelineOptions
from streamforge.pipeline.segments import plan_timeline


def test_hevc_codec_string_follows_iso_14496_15_annex_e():
    # Main 10, Main tier, level 5.1, progressive/frame-only constraint flags: Apple's "hvc1.2.4.L153.B0"
    hvcc = bytes([1, 0x02, 0x20, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 153])
    assert hls._hevc_suffix(hvcc) == "2.4.L153.B0"
    # Main, High tier: "1.6.H120.90"
    hvcc = bytes([1, 0x21, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120])
    assert hls._hevc_suffix(hvcc) == "1.6.H120.90"


def test_playlists_text():
    track = hls.TrackOutput(name="720p", kind="video", target_duration=4, frame_duration=0.04)
    track.codecs = "avc1.64001f"
    track.segments = [hls.Segment(1, "seg_00001.m4s", 4.0, 800_000, 90_000),
                      hls.Segment(2, "seg_00002.m4s", 1.28, 300_000, 80_000)]
    vod = hls.media_playlist(track, final=True)
    assert vod.splitlines()[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:4"]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.endswith("#EXT-X-ENDLIST\n")
    assert '#EXT-X-MAP:URI="init.mp4"' in vod and "#EXTINF:1.280000,\nseg_00002.m4s" in vod
    event = hls.media_playlist(track, final=False)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "ENDLIST" not in event
    assert "#EXT-X-START:TIME-OFFSET=0" in event
    iframes = hls.iframe_playlist(track, final=True)
    assert "#EXT-X-I-FRAMES-ONLY" in iframes and "#EXT-X-BYTERANGE:90000@0\nseg_00001.m4s" in iframes
    assert track.peak_bandwidth() == 1_875_000 and track.average_bandwidth() == 1_666_667

    audio = hls.TrackOutput(name="audio", kind="audio", target_duration=4)
    audio.codecs = "mp4a.40.2"
    audio.segments = [hls.Segment(1, "seg_00001.m4s", 4.0, 64_000, 0)]
    variant = hls.VariantInfo(track=track, width=1280, height=720, frame_rate=25.0, planned_peak=3_000_000)
    master = hls.master_playlist([variant], [hls.AudioRendition(track=audio, planned_peak=0)], final=True)
    assert ('#EXT-X-STREAM-INF:BANDWIDTH=2003000,AVERAGE-BANDWIDTH=1794667,RESOLUTION=1280x720,'
            'FRAME-RATE=25.000,CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"\n720p/index.m3u8') in master
    assert 'TYPE=AUDIO,GROUP-ID="audio"' in master and 'URI="audio/index.m3u8"' in master
    assert '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=500000,RESOLUTION=1280x720,CODECS="avc1.64001f",' \
           'URI="720p/iframes.m3u8"' in master
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in master


def test_timeline_boundaries_and_tail_merge():
    opts = PipelineOptions(segment_seconds=4)
    timeline = plan_timeline(Fraction(25), opts, duration=10.0)
    assert [n for n in range(251) if timeline.is_boundary(n)] == [0, 100, 200]
    assert timeline.boundary_time(1) == 4 and timeline.boundary_time(2) == 8
    # 8.2 s: a 0.2 s last segment would be merged into the one before
    timeline = plan_timeline(Fraction(25), opts, duration=8.2)
    assert [n for n in range(300) if timeline.is_boundary(n)] == [0, 100]
    assert timeline.boundary_time(2) == 12
    live = plan_timeline(Fraction(30000, 1001), PipelineOptions(segment_seconds=4, live=True), duration=60)
    assert [n for n in range(300) if live.is_boundary(n)] == [0, 15, 135, 255]  # a first segment of 0.5 s
    live = plan_timeline(Fraction(30000, 1001), PipelineOptions(segment_seconds=4, live=True, first_segment_seconds=1),
                         duration=60)
    assert [n for n in range(300) if live.is_boundary(n)] == [0, 30, 150, 270]


def test_encoder_options_from_config_add_to_ours():
    from streamforge.pipeline.ladder import RenditionSpec
    from streamforge.pipeline.transcode import encoder_settings

    spec = RenditionSpec("720p", "h264", 1280, 720, 2_500_000, 3_750_000, 5_000_000, Fraction(25))
    opts = PipelineOptions(rate_control="abr",
                           encoder_options={"h264": {"x264-params": "partitions=all", "tune": "film"}})
    name, options = encoder_settings(spec, opts, gop=100, threads=1)
    assert name == "libx264" and options["tune"] == "film" and options["preset"] == "veryfast"
    # ours first, theirs after (x264 applies them in order): keyframe alignment stays, partitions change
    assert options["x264-params"].startswith("keyint=100:min-keyint=100:scenecut=0")
    assert options["x264-params"].endswith(":partitions=all")
    assert options["b"] == "2500000" and options["maxrate"] == "3750000" and options["forced-idr"] == "1"


def _mux_into(sink, size: tuple[int, int], frames: range) -> None:
    import av
    from av.video.frame import PictureType
    with av.open(sink, "w", format="mp4", options={"movflags": "empty_moov+default_base_moof+frag_keyframe"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "x264-params": "keyint=25:scenecut=0:stitchable=1"}
        for n in frames:
            frame = av.VideoFrame(*size, "yuv420p")
            frame.pts, frame.pict_type = n, PictureType.I if n % 25 == 0 else PictureType.NONE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_a_resumed_sink_takes_a_second_muxer_on_the_first_ones_clock_and_refuses_other_headers(tmp_path):
    """A rung that goes on at another level (pipeline/levelswitch.py): the second muxer's fragments follow the
    first one's in time and numbering under the one init segment; a second muxer with other headers fails."""
    import av
    track = hls.TrackOutput(name="r", kind="video", target_duration=1, frame_duration=0.04)
    sink = hls.FragmentSink(track, tmp_path, lambda k: float(k), 0.02, lambda t, s: None, lambda t: None)
    _mux_into(sink, (64, 48), range(0, 25))
    sink.resume()
    _mux_into(sink, (64, 48), range(25, 50))
    sink.close()
    assert [s.filename for s in track.segments] == ["seg_00001.m4s", "seg_00002.m4s"]
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(b"".join((tmp_path / n).read_bytes() for n in ("init.mp4", "seg_00001.m4s", "seg_00002.m4s")))
    with av.open(str(joined)) as f:
        assert [float(fr.time) for fr in f.decode(video=0)] == [n / 25 for n in range(50)]
    other = hls.TrackOutput(name="o", kind="video", target_duration=1, frame_duration=0.04)
    sink = hls.FragmentSink(other, tmp_path / "o", lambda k: float(k), 0.02, lambda t, s: None, lambda t: None)
    (tmp_path / "o").mkdir()
    _mux_into(sink, (64, 48), range(0, 25))
    sink.resume()
    _mux_into(sink, (32, 24), range(25, 50))
    with pytest.raises(ValueError, match="init segment differs"):
        sink.close()
    assert len(other.segments) == 1
