"""Spoken numbers as on the radio, checked against phrases written out by hand."""

from flightmind.radio.phraseology import say, say_altitude, say_heading, say_runway, words


def test_say_digits_letters_and_the_decimal_point():
    assert say("124.75") == "one two four point seven five"
    assert say("9A") == "niner Alpha"
    assert say("n734ab") == "November seven three four Alpha Bravo"
    assert say("7-0") == "seven zero"  # anything else is not said


def test_words():
    assert [words(n) for n in (0, 9, 13, 20, 47, 90, 99)] == [
        "zero", "nine", "thirteen", "twenty", "forty-seven", "ninety", "ninety-nine"]


def test_altitudes_in_thousands_and_hundreds_then_flight_levels():
    assert say_altitude(4500) == "four thousand five hundred"
    assert say_altitude(900) == "niner hundred"
    assert say_altitude(10000) == "one zero thousand"
    assert say_altitude(17500) == "one seven thousand five hundred"
    assert say_altitude(18000) == "flight level one eight zero"
    assert say_altitude(24000) == "flight level two four zero"


def test_headings_have_three_digits_and_north_is_three_six_zero():
    assert say_heading(90) == "zero niner zero"
    assert say_heading(5) == "zero zero five"
    assert say_heading(0) == say_heading(360) == "three six zero"
    assert say_heading(370) == "zero one zero"


def test_runways_drop_the_leading_zero_and_name_the_side():
    assert say_runway("09L") == "niner left"
    assert say_runway("36") == "three six"
    assert say_runway("17C") == "one seven center"
